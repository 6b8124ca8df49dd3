//! Policies: parsing, attenuation, digest and request checks.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::capability::Capability;
use crate::check::{analyze, Severity};
use crate::limits::{LimitField, LimitValue, Limits};

/// A 1-based line and column in a policy source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A granted capability and where it was written, if it came from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// What is granted.
    pub capability: Capability,
    /// Where it was granted.
    pub location: Option<Location>,
}

impl From<Capability> for Grant {
    fn from(capability: Capability) -> Self {
        Grant {
            capability,
            location: None,
        }
    }
}

/// Which boundary a policy's runs need (`isolation:`), weakest first:
/// the jail (native code and scripts; WASM modules too, a boundary of
/// their own), `strong` (gVisor: a kernel in user space between the
/// program and the host's), `wasm` (WebAssembly modules only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    Jail,
    Strong,
    Wasm,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Jail => "jail",
            Isolation::Strong => "strong",
            Isolation::Wasm => "wasm",
        }
    }

    pub fn parse(text: &str) -> Option<Isolation> {
        match text {
            "jail" => Some(Isolation::Jail),
            "strong" => Some(Isolation::Strong),
            "wasm" => Some(Isolation::Wasm),
            _ => None,
        }
    }

    /// What a child policy's `isolation` makes of its parent's: a child may
    /// ask for more (jail → strong, jail → wasm), never less; strong and
    /// wasm exclude each other.
    pub fn narrowed(
        parent: Option<Isolation>,
        child: Option<Isolation>,
    ) -> Result<Option<Isolation>, (Isolation, Isolation)> {
        match (parent, child) {
            (None, c) => Ok(c),
            (p, None) => Ok(p),
            (Some(p), Some(c)) if p == c => Ok(Some(p)),
            (Some(Isolation::Jail), Some(c)) => Ok(Some(c)),
            (Some(p), Some(c)) => Err((p, c)),
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed policy: grants (deny by default) and limits.
///
/// Limit capabilities written in `grants` (`mem:limit:…` and the like) are
/// folded into `limits` by [`parse_policy`] and do not appear in `grants`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Policy {
    /// Path of the parent policy, as written (the caller resolves it).
    pub extends: Option<String>,
    /// What is granted, in source order.
    pub grants: Vec<Grant>,
    /// Resource limits.
    pub limits: Limits,
    /// `require_signed: true`: a processor is added and invoked only with a
    /// valid signature from the trust store.
    pub require_signed: bool,
    /// `audit: required`: no run skips the audit ledger (`--no-audit` is
    /// refused).
    pub audit_required: bool,
    /// `isolation: jail|strong|wasm`: the boundary its runs need (see
    /// [`Isolation`]); `None`: the backend the program's kind picks.
    pub isolation: Option<Isolation>,
    /// Name of the source, for messages (usually the file name).
    pub origin: String,
    /// True if the source had no `grants` key: on [`Policy::attenuate`] the
    /// parent's grants are inherited. False for a policy built by hand.
    pub inherit_grants: bool,
    /// Where `extends` is written, for messages about the chain.
    #[serde(skip)]
    pub extends_location: Option<Location>,
    /// Where each limit is set (its key, e.g. `memory`, and the first
    /// setting's place), for messages.
    #[serde(skip)]
    pub limit_locations: Vec<(&'static str, Location)>,
}

/// Why a policy could not be parsed or a request is refused. Displays as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The source is not a valid policy: the first error [`crate::check`] reports.
    #[error("{origin}:{location}: {message}")]
    Invalid {
        /// The source's name.
        origin: String,
        /// Where the problem is.
        location: Location,
        /// What it is.
        message: String,
    },
    /// A child policy grants something its parent does not.
    #[error("{}: grant {grant} widens parent policy {parent}: no grant there covers it", At(.origin, *.location))]
    Widens {
        /// The child's name.
        origin: String,
        /// Where the child grants it.
        location: Option<Location>,
        /// The widening grant.
        grant: Capability,
        /// The parent's name.
        parent: String,
    },
    /// A child policy raises a limit above its parent's.
    #[error(
        "{at}: limit {name} {value} widens parent policy {parent}, whose limit is {parent_value}"
    )]
    LimitWidens {
        /// The child's name, and where it sets the limit when known
        /// (`child.yaml:3:11`).
        at: String,
        /// The limit's key, e.g. `memory`.
        name: &'static str,
        /// The child's value.
        value: String,
        /// The parent's name.
        parent: String,
        /// The parent's value.
        parent_value: String,
    },
    /// A child policy asks for an isolation its parent's excludes, or less.
    #[error("{origin}: isolation {child} conflicts with parent policy {parent}, which requires isolation {parent_isolation}")]
    IsolationWidens {
        origin: String,
        child: Isolation,
        parent: String,
        parent_isolation: Isolation,
    },
    /// A requested capability that no grant of the policy covers.
    #[error("requested capability {capability} is not granted by policy {origin}")]
    NotGranted {
        /// The policy's name.
        origin: String,
        /// The first capability outside the policy.
        capability: Capability,
    },
    /// Requested limits above the policy's.
    #[error("requested limits exceed policy {origin}: {}", .exceeded.join(", "))]
    LimitsExceeded {
        /// The policy's name.
        origin: String,
        /// Each limit exceeded, e.g. `memory 512MiB exceeds 256MiB`.
        exceeded: Vec<String>,
    },
}

/// `origin:line:col`, or `origin` alone without a location.
struct At<'a>(&'a str, Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(location) => write!(f, "{}:{location}", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// Parses a YAML policy. `origin` names the source in messages.
///
/// Fails with the first error [`crate::check`] would report (warnings do not
/// fail). Does no I/O: `extends` is returned for the caller to resolve.
pub fn parse_policy(source: &str, origin: &str) -> Result<Policy, PolicyError> {
    let (diagnostics, policy) = analyze(source, origin);
    match diagnostics
        .into_iter()
        .find(|d| d.severity == Severity::Error)
    {
        Some(error) => Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            location: error.location,
            message: error.message,
        }),
        None => Ok(policy),
    }
}

impl Policy {
    /// True if the policy allows `capability`: some grant subsumes it, or,
    /// for a limit capability, it is within the policy's limit of that kind
    /// (a kind the policy does not limit allows any value).
    pub fn permits(&self, capability: &Capability) -> bool {
        match LimitField::of_capability(capability) {
            Some((field, value)) => {
                let within_limits = self.limits.get(field).is_none_or(|max| value <= max);
                let within_grants = self
                    .grants
                    .iter()
                    .filter(|g| {
                        LimitField::of_capability(&g.capability).is_some_and(|(f, _)| f == field)
                    })
                    .all(|g| g.capability.subsumes(capability));
                within_limits && within_grants
            }
            None => self
                .grants
                .iter()
                .any(|g| g.capability.subsumes(capability)),
        }
    }

    /// Narrows `parent` by `child`.
    ///
    /// Every child grant must be subsumed by a parent grant, and every child
    /// limit must be at most the parent's. A child without a `grants` key
    /// inherits the parent's grants; an unset child limit inherits the
    /// parent's. The result has the child's origin and no `extends`.
    pub fn attenuate(parent: &Policy, child: &Policy) -> Result<Policy, PolicyError> {
        let grants = if child.inherit_grants {
            parent.grants.clone()
        } else {
            if let Some(widening) = child.grants.iter().find(|g| !parent.permits(&g.capability)) {
                return Err(PolicyError::Widens {
                    origin: child.origin.clone(),
                    location: widening.location,
                    grant: widening.capability.clone(),
                    parent: parent.origin.clone(),
                });
            }
            child.grants.clone()
        };
        for field in LimitField::ALL {
            if let (Some(value), Some(max)) = (child.limits.get(field), parent.limits.get(field)) {
                if value > max {
                    let location = child
                        .limit_locations
                        .iter()
                        .find(|(key, _)| *key == field.key())
                        .map(|(_, at)| *at);
                    return Err(PolicyError::LimitWidens {
                        at: At(&child.origin, location).to_string(),
                        name: field.key(),
                        value: value.to_string(),
                        parent: parent.origin.clone(),
                        parent_value: max.to_string(),
                    });
                }
            }
        }
        Ok(Policy {
            extends: None,
            grants,
            limits: child.limits.or(&parent.limits),
            // A child can add these requirements, never drop its parent's.
            require_signed: parent.require_signed || child.require_signed,
            audit_required: parent.audit_required || child.audit_required,
            isolation: Isolation::narrowed(parent.isolation, child.isolation).map_err(
                |(parent_isolation, isolation)| PolicyError::IsolationWidens {
                    origin: child.origin.clone(),
                    child: isolation,
                    parent: parent.origin.clone(),
                    parent_isolation,
                },
            )?,
            origin: child.origin.clone(),
            inherit_grants: false,
            extends_location: None,
            limit_locations: child.limit_locations.clone(),
        })
    }

    /// `"sha256:<hex>"` over a canonical form of the grants (deduplicated,
    /// sorted, in display form) and the limits. Independent of key order,
    /// grant order, spelling (`1GiB` vs `1024MiB`), locations and origin.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"warden-policy v1\n");
        let grants: BTreeSet<String> = self
            .grants
            .iter()
            .map(|g| g.capability.to_string())
            .collect();
        for grant in grants {
            hasher.update(b"grant ");
            hasher.update(grant.as_bytes());
            hasher.update(b"\n");
        }
        for field in LimitField::ALL {
            if let Some(value) = self.limits.get(field) {
                let canonical = match value {
                    LimitValue::Bytes(n) | LimitValue::Count(n) => n.to_string(),
                    LimitValue::Time(d) => d.as_nanos().to_string(),
                    LimitValue::Percent(p) => p.to_string(),
                };
                hasher.update(format!("limit {} {canonical}\n", field.key()).as_bytes());
            }
        }
        // Only when set, so that the digest of a policy without them is
        // what it was before they existed.
        if self.require_signed {
            hasher.update(b"require_signed\n");
        }
        if self.audit_required {
            hasher.update(b"audit required\n");
        }
        if let Some(isolation) = self.isolation {
            hasher.update(format!("isolation {isolation}\n").as_bytes());
        }
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// Effective grants of a request: every requested capability must be
    /// allowed by the policy (see [`Policy::permits`]) and the requested
    /// limits must not exceed the policy's. Returns the requested non-limit
    /// capabilities, deduplicated, in request order.
    pub fn allow_request(
        &self,
        requested: &[Capability],
        limits: &Limits,
    ) -> Result<Vec<Capability>, PolicyError> {
        if let Some(outside) = requested.iter().find(|c| !self.permits(c)) {
            return Err(PolicyError::NotGranted {
                origin: self.origin.clone(),
                capability: outside.clone(),
            });
        }
        let exceeded = limits.exceeding(&self.limits);
        if !exceeded.is_empty() {
            return Err(PolicyError::LimitsExceeded {
                origin: self.origin.clone(),
                exceeded,
            });
        }
        let mut effective: Vec<Capability> = Vec::new();
        for capability in requested.iter().filter(|c| !c.is_limit()) {
            if !effective.contains(capability) {
                effective.push(capability.clone());
            }
        }
        Ok(effective)
    }

    /// Makes every relative `fs:` grant absolute against `base` (the
    /// directory of the policy file, usually). See [`Capability::with_base`].
    pub fn with_base(mut self, base: &Path) -> Policy {
        for grant in &mut self.grants {
            grant.capability = grant.capability.clone().with_base(base);
        }
        self
    }
}
