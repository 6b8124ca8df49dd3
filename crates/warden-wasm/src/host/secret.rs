//! `secret`: a guest reads a secret leased to its invocation
//! (`secret:NAME` or `secret:NAME:env`).
//!
//! The engine leases every granted secret before the run and puts the
//! values into [`Invocation::secrets`]; the backend refuses a run granted a
//! secret it holds no lease for. Each read checks, at that moment, that
//! the lease is still valid in the lease store (`STATE/leases`, see
//! [`warden_secrets::LeaseStore`]): once it is revoked or expired, reads
//! are refused (`denied`, recorded as a violation). The value is the one
//! leased (the version of the lease), not read from the store again.

use std::path::{Path, PathBuf};

use warden_core::{Invocation, LeasedSecret};
use warden_policy::Capability;
use warden_secrets::{LeaseError, LeaseStore};
use zeroize::Zeroizing;

use super::{HostError, HostState};

/// The secrets leased to one run, and where their leases are checked.
pub(crate) struct Secrets {
    leased: Vec<LeasedSecret>,
    /// The state directory of the lease store; `None`: no lease can be
    /// checked, so no secret can be read.
    state_dir: Option<PathBuf>,
    /// Opened at the first read.
    store: Option<LeaseStore>,
}

impl Secrets {
    /// `None` when the invocation holds no secret.
    pub fn new(inv: &Invocation, state_dir: Option<&Path>) -> Option<Self> {
        (!inv.secrets.is_empty()).then(|| Secrets {
            leased: inv.secrets.clone(),
            state_dir: state_dir.map(Path::to_path_buf),
            store: None,
        })
    }

    fn store(&mut self) -> Result<&LeaseStore, HostError> {
        if self.store.is_none() {
            let dir = self.state_dir.as_deref().ok_or_else(|| {
                HostError::Unavailable("no state directory to check leases in".into())
            })?;
            let store = LeaseStore::open(dir)
                .map_err(|e| HostError::Unavailable(format!("lease store: {e}")))?;
            self.store = Some(store);
        }
        Ok(self.store.as_ref().expect("opened above"))
    }

    /// The value of `name` if its lease is valid now.
    fn read(&mut self, name: &str) -> Result<Zeroizing<Vec<u8>>, Refusal> {
        let index = self
            .leased
            .iter()
            .position(|s| s.name == name)
            .ok_or(Refusal::Error(HostError::NotFound))?;
        let lease_id = self.leased[index].lease_id.clone();
        let store = self.store().map_err(Refusal::Error)?;
        match store.check(&lease_id, warden_secrets::unix_now()) {
            Ok(_) => Ok(Zeroizing::new(self.leased[index].value.expose().to_vec())),
            Err(LeaseError::Revoked(_)) => Err(Refusal::LeaseEnded("was revoked")),
            Err(LeaseError::Expired(_)) => Err(Refusal::LeaseEnded("expired")),
            Err(LeaseError::Unknown(_)) => Err(Refusal::LeaseEnded("is not on record")),
            // Unreadable or corrupt: no read without a checked lease.
            Err(e) => Err(Refusal::Error(HostError::Unavailable(format!(
                "lease store: {e}"
            )))),
        }
    }
}

/// Why a read gave no value.
enum Refusal {
    /// The lease is no longer valid: a denial, recorded.
    LeaseEnded(&'static str),
    Error(HostError),
}

/// `secret.read`: checks `secret:NAME` (`:env` covers it), then the lease.
pub(crate) fn read(
    state: &mut HostState,
    function: &'static str,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, HostError> {
    state.require(function, Capability::Secret(name.to_string()))?;
    let Some(secrets) = state.secrets.as_deref_mut() else {
        // Granted but not leased: the backend refuses such a run before
        // it starts, so only a bug gets here.
        return Err(HostError::NotFound);
    };
    match secrets.read(name) {
        Ok(value) => Ok(value),
        Err(Refusal::Error(e)) => Err(e),
        Err(Refusal::LeaseEnded(why)) => Err(state.record_denial(HostError::LeaseEnded {
            function,
            secret: name.to_string(),
            why,
        })),
    }
}
