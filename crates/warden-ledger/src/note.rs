//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures, and
//! the transparency-log checkpoints carried in them
//! (c2sp.org/tlog-checkpoint): origin, tree size, base64 root hash.
//!
//! A note is its text (ending in a newline), a blank line, and signature
//! lines `— NAME base64(key ID ‖ signature)`; the key ID is the first four
//! bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), and a verifier key
//! is written `NAME+hex(key ID)+base64(0x01 ‖ public key)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// Notes larger than this are refused before parsing.
pub const MAX_NOTE_BYTES: usize = 1 << 16;

/// At most this many signature lines are looked at.
const MAX_SIGNATURES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(String),
    #[error("the note has no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify: the note was changed or forged")]
    BadSignature(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The key ID of an Ed25519 key under `name`.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A key that checks signatures of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub id: u32,
    pub key: VerifyingKey,
}

impl Verifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Verifier, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadVerifierKey(format!("key name {name:?}")));
        }
        Ok(Verifier {
            name: name.to_string(),
            id: key_id(name, &key),
            key,
        })
    }

    /// `NAME+HEXKEYID+BASE64(0x01 ‖ key)`.
    pub fn encode(&self) -> String {
        let mut material = vec![ED25519];
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(material)
        )
    }

    pub fn parse(text: &str) -> Result<Verifier, NoteError> {
        let bad = |why: &str| NoteError::BadVerifierKey(why.to_string());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected NAME+KEYID+KEY"));
        };
        if !valid_name(name) || id.len() != 8 {
            return Err(bad("bad name or key ID"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("key ID is not hex"))?;
        let material = STANDARD
            .decode(material)
            .map_err(|_| bad("key is not base64"))?;
        let [ED25519, key @ ..] = material.as_slice() else {
            return Err(bad("not an Ed25519 key"));
        };
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("Ed25519 keys are 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid Ed25519 point"))?;
        let v = Verifier::new(name, key)?;
        if v.id != id {
            return Err(bad("key ID does not match the name and key"));
        }
        Ok(v)
    }
}

/// Signs `text` (which must end in a newline) as `name`: the whole note.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    check_text(text)?;
    if !valid_name(name) {
        return Err(NoteError::Malformed(format!("key name {name:?}")));
    }
    let id = key_id(name, &key.verifying_key());
    let sig = key.sign(text.as_bytes());
    let mut blob = id.to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    Ok(format!(
        "{text}\n\u{2014} {name} {}\n",
        STANDARD.encode(blob)
    ))
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the text must end in a newline".into(),
        ));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character in the text".into()));
    }
    Ok(())
}

/// Checks `note` against `verifier`; returns its text. Signatures of other
/// keys are ignored; the note is refused unless `verifier`'s verifies.
pub fn open<'a>(note: &'a str, verifier: &Verifier) -> Result<&'a str, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::Malformed(format!(
            "larger than {MAX_NOTE_BYTES} bytes"
        )));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    check_text(text)?;
    if !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "signatures must end in a newline".into(),
        ));
    }
    let mut verified = false;
    for line in sigs.lines().take(MAX_SIGNATURES) {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed("signature line without a signature".into()))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
        if blob.len() < 4 {
            return Err(NoteError::Malformed(
                "signature shorter than its key ID".into(),
            ));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        if name != verifier.name || id != verifier.id {
            continue;
        }
        let sig = Signature::from_slice(&blob[4..])
            .map_err(|_| NoteError::BadSignature(verifier.name.clone()))?;
        verifier
            .key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature(verifier.name.clone()))?;
        verified = true;
    }
    if !verified {
        return Err(NoteError::NotSigned(verifier.name.clone()));
    }
    Ok(text)
}

/// A log's tree head: what a checkpoint's text says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, each on its line.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint's text (extension lines are allowed and ignored).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::BadCheckpoint(why);
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line".into()))?;
        let size = lines
            .next()
            .ok_or_else(|| bad("no tree size line".into()))?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(format!("tree size {size:?}")));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("tree size {size:?}")))?;
        let root = lines
            .next()
            .ok_or_else(|| bad("no root hash line".into()))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of base64".into()))?;
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line".into()));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of c2sp.org/signed-note.
    const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn the_specifications_example_verifies() {
        let v = Verifier::parse(VKEY).unwrap();
        assert_eq!(v.encode(), VKEY);
        assert_eq!(open(NOTE, &v).unwrap(), "This is an example message.\n");
        let changed = NOTE.replace("example message", "exemple message");
        assert_eq!(
            open(&changed, &v),
            Err(NoteError::BadSignature("example.com/foo".into()))
        );
        // A wrong key ID in the verifier key is refused.
        assert!(Verifier::parse(&VKEY.replace("530d903a", "530d903b")).is_err());
    }

    #[test]
    fn checkpoints_are_signed_and_opened() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let cp = Checkpoint {
            origin: "warden.local/test-log".into(),
            size: 20_852_163,
            root: [9u8; 32],
        };
        let note = sign(&cp.text(), &cp.origin, &key).unwrap();
        let v = Verifier::new(&cp.origin, key.verifying_key()).unwrap();
        let text = open(&note, &v).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), cp);
        // Another log's key: not signed by it.
        let other = Verifier::new("other.log", key.verifying_key()).unwrap();
        assert!(matches!(open(&note, &other), Err(NoteError::NotSigned(_))));
        // A rewritten size with the old signature.
        let forged = note.replace("20852163", "20852164");
        assert!(matches!(open(&forged, &v), Err(NoteError::BadSignature(_))));
        for bad in ["", "o\n", "o\n01\nAAAA\n", "o\n5\nnot-base64\n", "\n5\n"] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "no blank line\n",
            "text\n\nnot a signature\n",
            "text\n\n\u{2014} x AA==\n",
        ] {
            assert!(open(bad, &v).is_err(), "{bad:?}");
        }
        assert!(sign("no newline", "n", &key).is_err());
        assert!(sign("a\u{1}b\n", "n", &key).is_err());
    }
}
