//! The public vocabulary (actions, resources, diagnostics) and the typed,
//! located form of an RBAC file.

use std::fmt;
use std::str::FromStr;

use warden_policy::{Capability, Location, Severity};

/// Something Warden may be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Run a processor.
    Invoke,
    /// Register a processor.
    ProcessorAdd,
    /// Remove a processor.
    ProcessorRm,
    /// Store a secret.
    SecretPut,
    /// Read (lease) a secret.
    SecretRead,
    /// Revoke a secret lease.
    LeaseRevoke,
    /// Change a tenant's capability policy.
    PolicyChange,
    /// Change a tenant's trust store.
    TrustChange,
    /// Read a tenant's audit ledger.
    AuditRead,
    /// Export a tenant's audit ledger.
    AuditExport,
    /// See redacted values in a tenant's audit ledger.
    AuditReveal,
    /// Administer a tenant.
    TenantAdmin,
}

impl Action {
    /// Every action, in the order of the documentation.
    pub const ALL: [Action; 12] = [
        Action::Invoke,
        Action::ProcessorAdd,
        Action::ProcessorRm,
        Action::SecretPut,
        Action::SecretRead,
        Action::LeaseRevoke,
        Action::PolicyChange,
        Action::TrustChange,
        Action::AuditRead,
        Action::AuditExport,
        Action::AuditReveal,
        Action::TenantAdmin,
    ];

    /// The name used in RBAC files and Cedar (`processor.add`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Invoke => "invoke",
            Action::ProcessorAdd => "processor.add",
            Action::ProcessorRm => "processor.rm",
            Action::SecretPut => "secret.put",
            Action::SecretRead => "secret.read",
            Action::LeaseRevoke => "lease.revoke",
            Action::PolicyChange => "policy.change",
            Action::TrustChange => "trust.change",
            Action::AuditRead => "audit.read",
            Action::AuditExport => "audit.export",
            Action::AuditReveal => "audit.reveal",
            Action::TenantAdmin => "tenant.admin",
        }
    }

    /// The kind of resource this action applies to.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Action::Invoke | Action::ProcessorAdd | Action::ProcessorRm => ResourceKind::Processor,
            Action::SecretPut | Action::SecretRead => ResourceKind::Secret,
            Action::LeaseRevoke => ResourceKind::Lease,
            _ => ResourceKind::Tenant,
        }
    }

    pub(crate) fn index(self) -> usize {
        Action::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not one of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}: expected one of invoke, processor.add, processor.rm, secret.put, secret.read, lease.revoke, policy.change, trust.change, audit.read, audit.export, audit.reveal, tenant.admin")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// What kind of thing a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A processor, named as registered.
    Processor,
    /// A secret, by name.
    Secret,
    /// A secret lease, by its id.
    Lease,
    /// A tenant itself (policy, trust store, audit ledger, administration).
    Tenant,
}

impl ResourceKind {
    /// The Cedar entity type (`Processor`).
    pub fn cedar_type(self) -> &'static str {
        match self {
            ResourceKind::Processor => "Processor",
            ResourceKind::Secret => "Secret",
            ResourceKind::Lease => "Lease",
            ResourceKind::Tenant => "Tenant",
        }
    }

    /// Lower-case, for messages (`processor`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Processor => "processor",
            ResourceKind::Secret => "secret",
            ResourceKind::Lease => "lease",
            ResourceKind::Tenant => "tenant",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// `allow:` — a Cedar `permit`.
    Allow,
    /// `deny:` — a Cedar `forbid`; deny wins.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// One problem in an RBAC file (or a cases file), with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error (the file cannot be used) or warning.
    pub severity: Severity,
    /// The file, as named by the caller.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, one line.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `rbac.yaml:4:5: error: unknown role "opertor"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )
    }
}

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub name: String,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleDef {
    pub name: String,
    pub inherits: Vec<Named>,
}

#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub principals: Vec<Named>,
    /// `None` for `tenant: "*"`: the roles hold in every tenant.
    pub tenant: Option<String>,
    pub roles: Vec<Named>,
}

/// `when:` of a rule; every present condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Conditions {
    /// The resource's tenant is one of these.
    pub tenants: Vec<String>,
    /// The resource carries all of these tags.
    pub tags: Vec<String>,
    /// Minute of the UTC day in `[start, end)` (wrapping past midnight if start > end).
    pub hours: Option<(u32, u32)>,
    /// The input is at most this many bytes.
    pub max_input_bytes: Option<u64>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Position in `rules:` (the id is `rules[index]`).
    pub index: usize,
    pub at: Location,
    pub effect: Effect,
    pub action: Action,
    pub role: Named,
    /// Name patterns (`*` matches any run of characters).
    pub resources: Vec<String>,
    /// For `invoke`: the capabilities a request may carry at most.
    pub ceiling: Option<Vec<Capability>>,
    pub when: Conditions,
    /// Unix seconds after which the rule no longer applies.
    pub expires: Option<i64>,
    pub expires_at: Option<Location>,
    /// Allow acting on resources of other tenants.
    pub cross_tenant: bool,
}

impl Rule {
    pub fn id(&self) -> String {
        format!("rules[{}]", self.index)
    }
}

/// A parsed RBAC file (only its valid parts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rbac {
    pub os_users: Vec<(String, Named)>,
    pub roles: Vec<RoleDef>,
    pub bindings: Vec<Binding>,
    pub rules: Vec<Rule>,
}
