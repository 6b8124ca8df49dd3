//! Warden's signatures, in formats that tools nobody here wrote can check:
//! Ed25519 keys exported as PEM (SubjectPublicKeyInfo), DSSE envelopes
//! (signature over DSSE's pre-authentication encoding, so the payload type
//! separates domains) whose payload is an in-toto Statement v1 naming the
//! artifact's SHA-256 and a Warden predicate (artifact type, name,
//! version, signing time, expiry). `keystore` keeps named keys in the
//! state directory; the rest is pure: bytes in, values out.
#![forbid(unsafe_code)]

pub mod dsse;
pub mod keys;
pub mod keystore;
pub mod statement;
pub mod truststore;

pub use dsse::{Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE};
pub use keys::{key_id, KeyError, KeyPair};
pub use statement::{ArtifactType, Predicate, Statement, PREDICATE_TYPE};

/// One fuzz input through every parser of this crate (envelopes, their
/// payloads as statements, PEM keys) and a verification against an empty
/// trust: none may panic, and nothing may verify. The fuzz target
/// `trust_parse` calls it.
pub fn fuzz_one(data: &[u8]) {
    if let Ok(env) = Envelope::parse(data) {
        if let Ok(payload) = env.payload_bytes() {
            let _ = Statement::parse(&payload);
        }
        assert!(env.verify(IN_TOTO_PAYLOAD_TYPE, |_| None).is_err());
    }
    let _ = Statement::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys::public_from_pem(text);
        let _ = truststore::parse_time(text);
    }
}

#[cfg(test)]
mod fuzz_seeds {
    /// The fuzz body on a signed envelope and on junk (stable-toolchain
    /// check of what the fuzz target runs).
    #[test]
    fn fuzz_one_takes_envelopes_and_junk() {
        let key = crate::KeyPair::generate().unwrap();
        let env = crate::Envelope::sign(&key, crate::IN_TOTO_PAYLOAD_TYPE, b"{}");
        crate::fuzz_one(env.to_json().as_bytes());
        for junk in [&b""[..], b"{", b"\xff\xfe", b"-----BEGIN PUBLIC KEY-----"] {
            crate::fuzz_one(junk);
        }
    }
}
