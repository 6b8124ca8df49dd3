//! Confidential ledger fields: a value a processor marks `confidential`
//! (its argv, a JSON pointer into its input) enters the ledger entry only
//! as a salted commitment, `sha256:HEX` of SHA-256(salt ‖ JCS(value)) with
//! a random 32-byte salt. The plaintext and the salt are kept apart,
//! encrypted under the master key (in the secret store, under the reserved
//! tenant [`SEAL_TENANT`], one record per entry), so that `warden audit
//! show --reveal` can show and check them, and `warden audit shred` can
//! delete them for good — crypto-shredding: the entry's bytes, and with
//! them every inclusion and consistency proof, never change.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The secret store's tenant that holds sealed ledger fields; no real
/// tenant may have this name (it cannot be added).
pub const SEAL_TENANT: &str = "_ledger";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{0}")]
    Secret(#[from] warden_secrets::SecretError),
    #[error("{0}")]
    Lease(#[from] crate::secrets::LeaseFailure),
    #[error("cannot encode a confidential value: {0}")]
    Encode(String),
    #[error("sealed record {0} is damaged: {1}")]
    Damaged(String, String),
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Hex salt.
    salt: String,
    value: serde_json::Value,
}

/// `sha256:HEX` of SHA-256(salt ‖ JCS(value)).
pub fn commitment(salt: &[u8], value: &serde_json::Value) -> Result<String, SealError> {
    let canonical =
        serde_json_canonicalizer::to_vec(value).map_err(|e| SealError::Encode(e.to_string()))?;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(&canonical);
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| SealError::Encode(format!("getrandom: {e}")))?;
    Ok(b)
}

/// Seals `fields` (name → value): returns the seal id and each field's
/// commitment, for the ledger entry.
pub fn seal(
    state: &Path,
    fields: &BTreeMap<String, serde_json::Value>,
) -> Result<(String, BTreeMap<String, String>), SealError> {
    let id = hex::encode(random_bytes::<16>()?);
    let commitments = add_fields(state, &id, BTreeMap::new(), fields)?;
    Ok((id, commitments))
}

/// Adds `fields` to the seal `id` (made by [`seal`]): returns their
/// commitments. For values known only after the run (its output).
pub fn seal_more(
    state: &Path,
    id: &str,
    fields: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, SealError> {
    let held = reveal(state, id)?;
    add_fields(state, id, held, fields)
}

/// Writes `held` plus `fields` (each with a fresh salt) as seal `id`;
/// the new fields' commitments.
fn add_fields(
    state: &Path,
    id: &str,
    held: BTreeMap<String, (Vec<u8>, serde_json::Value)>,
    fields: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, SealError> {
    let mut record = held;
    let mut commitments = BTreeMap::new();
    for (name, value) in fields {
        let salt = random_bytes::<32>()?;
        commitments.insert(name.clone(), commitment(&salt, value)?);
        record.insert(name.clone(), (salt.to_vec(), value.clone()));
    }
    write_record(state, id, record)?;
    Ok(commitments)
}

/// Replaces seal `id`'s stored record with `record` (every earlier
/// version of it deleted); an empty record leaves nothing.
fn write_record(
    state: &Path,
    id: &str,
    record: BTreeMap<String, (Vec<u8>, serde_json::Value)>,
) -> Result<(), SealError> {
    let master = crate::secrets::master_key(state)?;
    let store = warden_secrets::SecretStore::open(state, &master)?;
    let name = format!("seal-{id}");
    match store.remove(SEAL_TENANT, &name) {
        Ok(_) | Err(warden_secrets::SecretError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if record.is_empty() {
        return Ok(());
    }
    let record: BTreeMap<String, Sealed> = record
        .into_iter()
        .map(|(k, (salt, value))| {
            (
                k,
                Sealed {
                    salt: hex::encode(salt),
                    value,
                },
            )
        })
        .collect();
    let bytes = zeroize::Zeroizing::new(
        serde_json::to_vec(&record).map_err(|e| SealError::Encode(e.to_string()))?,
    );
    store.put(SEAL_TENANT, &name, &bytes)?;
    Ok(())
}

/// What a seal still holds: field → (salt, value); a shredded field is
/// absent. An unknown or fully shredded seal is empty.
pub fn reveal(
    state: &Path,
    id: &str,
) -> Result<BTreeMap<String, (Vec<u8>, serde_json::Value)>, SealError> {
    let master = crate::secrets::master_key(state)?;
    let store = warden_secrets::SecretStore::open(state, &master)?;
    let bytes = match store.get(SEAL_TENANT, &format!("seal-{id}"), None) {
        Ok(b) => b,
        Err(warden_secrets::SecretError::NotFound { .. }) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let record: BTreeMap<String, Sealed> = serde_json::from_slice(&bytes)
        .map_err(|e| SealError::Damaged(id.to_string(), e.to_string()))?;
    record
        .into_iter()
        .map(|(k, v)| {
            let salt = hex::decode(&v.salt)
                .map_err(|e| SealError::Damaged(id.to_string(), e.to_string()))?;
            Ok((k, (salt, v.value)))
        })
        .collect()
}

/// Deletes `field`'s plaintext and salt from a seal for good (every
/// stored version of the record); returns whether it was there.
pub fn shred(state: &Path, id: &str, field: &str) -> Result<bool, SealError> {
    let mut fields = reveal(state, id)?;
    if fields.remove(field).is_none() {
        return Ok(false);
    }
    write_record(state, id, fields)?;
    Ok(true)
}

/// The value at RFC 6901 `pointer` of `doc`, if there is one.
pub fn pointer<'a>(doc: &'a serde_json::Value, pointer: &str) -> Option<&'a serde_json::Value> {
    doc.pointer(pointer)
}
