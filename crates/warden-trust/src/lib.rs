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
