//! Tenants, principals and RBAC for Warden, compiled to Cedar.
//!
//! An RBAC file (YAML, see `docs/authz.md`) names roles with inheritance,
//! binds principals to roles per tenant, and has rules that allow or deny
//! a role an action on resources, with conditions, a capability ceiling
//! for `invoke` and time-bound overrides. [`Authz::load`] parses it once,
//! compiles it to Cedar policies plus a Cedar schema, and validates the
//! policies against the schema in strict mode; [`Authz::decide`] then asks
//! Cedar's authorizer. Deny wins; nothing is allowed unless a rule allows
//! it; a permit reaches only the principal's own tenant unless the rule
//! says `cross_tenant: true`.
//!
//! ```
//! use warden_authz::{Action, Authz, Request, Resource, ResourceKind};
//!
//! let rbac = "
//! roles: {operator: {}}
//! bindings: [{principal: alice, tenant: acme, roles: [operator]}]
//! rules:
//!   - allow: invoke
//!     role: operator
//!     resources: [\"parser*\"]
//!     ceiling: [fs:read:/data]
//! ";
//! let authz = Authz::load(rbac, "rbac.yaml").unwrap();
//! let mut request = Request {
//!     principal: "alice".into(),
//!     tenant: "acme".into(),
//!     action: Action::Invoke,
//!     resource: Resource::new(ResourceKind::Processor, "parser-1", "acme"),
//!     capabilities: vec!["fs:read:/data/in".into()],
//!     input_bytes: 0,
//!     now: 0,
//! };
//! assert!(authz.decide(&request).allowed);
//! request.capabilities.push("fs:write:/data".into());
//! assert!(!authz.decide(&request).allowed);
//! ```
#![forbid(unsafe_code)]

mod ceiling;
mod compile;
mod lint;
mod model;
mod parse;
mod time;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use warden_policy::{Capability, Location, Severity, YamlNode, YamlNodeKind};

pub use ceiling::{covering_keys, within_ceiling, CAPABILITY_SLOTS};
pub use model::{Action, Diagnostic, Effect, ResourceKind, UnknownAction};
pub use time::{format_timestamp, minute_of_day, parse_timestamp};

use ceiling::{capability_context, CapabilityContext, LIMIT_FIELDS};
use compile::{principal_entity, resource_entity, role_entity, tenant_entity, uid};
use model::{Rbac, Rule};
use parse::{parse_rbac, role_ancestors, Diagnostics};

/// What a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Processor, secret, lease or tenant.
    pub kind: ResourceKind,
    /// Its name (for a tenant: the tenant's name).
    pub name: String,
    /// The tenant that owns it (ignored for a tenant, which owns itself).
    pub tenant: String,
    /// Its tags (processor tags from the registry; ignored for a tenant).
    pub tags: Vec<String>,
}

impl Resource {
    /// A resource without tags.
    pub fn new(kind: ResourceKind, name: impl Into<String>, tenant: impl Into<String>) -> Self {
        Resource {
            kind,
            name: name.into(),
            tenant: tenant.into(),
            tags: Vec::new(),
        }
    }
}

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who asks, by principal name.
    pub principal: String,
    /// The tenant the principal acts in.
    pub tenant: String,
    /// What they want to do.
    pub action: Action,
    /// To what.
    pub resource: Resource,
    /// For `invoke`: the capabilities the run would be granted.
    pub capabilities: Vec<String>,
    /// For `invoke`: the size of the input.
    pub input_bytes: u64,
    /// The time of the request, unix seconds.
    pub now: i64,
}

/// A rule, for citing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// `rules[3]` (also the Cedar `@id`).
    pub id: String,
    /// The RBAC file.
    pub file: String,
    /// Where the rule starts.
    pub line: usize,
    /// Where the rule starts.
    pub column: usize,
    /// The rule in one line (`allow invoke to role operator on parser* …`).
    pub text: String,
    /// Allow or deny.
    pub effect: Effect,
    /// For a time-bound override: when it lapses (unix seconds).
    pub expires: Option<i64>,
}

impl std::fmt::Display for RuleRef {
    /// `rbac.yaml:9:5: rules[0]: allow invoke …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.id, self.text
        )
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// True only if some rule allows and no rule denies.
    pub allowed: bool,
    /// The rules that decided: the allowing rules, or the denying ones;
    /// empty for a default deny or a malformed request.
    pub deciding: Vec<RuleRef>,
    /// Why, one line.
    pub reason: String,
}

impl Decision {
    /// The time-bound overrides this decision used (to audit their use).
    pub fn overrides_used(&self) -> impl Iterator<Item = &RuleRef> {
        self.deciding
            .iter()
            .filter(|r| self.allowed && r.expires.is_some())
    }

    fn refused(reason: String) -> Self {
        Decision {
            allowed: false,
            deciding: Vec::new(),
            reason,
        }
    }
}

/// One row of `warden authz test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Position of the case in the list.
    pub index: usize,
    /// Where the case starts in the cases file.
    pub line: usize,
    /// Where the case starts in the cases file.
    pub column: usize,
    /// What the case expects.
    pub expect_allowed: bool,
    /// What was decided.
    pub decision: Decision,
}

impl CaseResult {
    /// True if the decision is the expected one.
    pub fn passed(&self) -> bool {
        self.expect_allowed == self.decision.allowed
    }
}

/// The compiled Cedar form of an RBAC file, for `warden authz export-cedar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CedarExport {
    /// The policies, one per rule, in Cedar syntax.
    pub policies: String,
    /// The schema, in Cedar schema syntax.
    pub schema: String,
    /// Roles, tenants and principals in Cedar's entities JSON format.
    pub entities: String,
}

/// Why a request that no rule allows is denied.
fn no_rule_reason(request: &Request) -> String {
    let resource = &request.resource;
    let mut reason = format!(
        "no rule allows {} (tenant {}) to {} {} {:?} of tenant {}",
        request.principal,
        request.tenant,
        request.action,
        resource.kind,
        resource.name,
        resource_tenant(resource)
    );
    if resource_tenant(resource) != request.tenant {
        reason.push_str(
            "; tenants are isolated: only a rule with cross_tenant: true reaches another tenant",
        );
    }
    reason
}

/// Cedar's `like` for a pattern without escapes: `*` matches any run of
/// characters (also none), every other character itself.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut i, mut j) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Policies that may apply to a request, each with its rule's index.
type Slice = Vec<(Policy, usize)>;

/// An action's index and a principal's sorted roles.
type SliceKey = (usize, Vec<String>);

/// How many (action, role set) policy slices [`Authz`] keeps.
const SLICE_CACHE: usize = 4096;

/// A loaded RBAC file: parsed, compiled and validated once.
pub struct Authz {
    origin: String,
    rules: Vec<RuleRef>,
    rule_by_policy: HashMap<PolicyId, usize>,
    /// Per action: role → the policies of the rules naming that role, with
    /// each rule's index. Every rule's scope is `principal in Role::R`, so
    /// only the policies of the principal's own (flattened) roles can
    /// apply to a request.
    policies_by_role: Vec<HashMap<String, Vec<(Policy, usize)>>>,
    /// (action, sorted roles) → those policies, gathered on first use; at
    /// most [`SLICE_CACHE`] entries.
    slices: Mutex<HashMap<SliceKey, Arc<Slice>>>,
    /// Per rule: the resource-name patterns one of which its policy
    /// requires (`resource.name like P`), or `None` when it applies to any
    /// name (or has a pattern this prefilter does not read).
    patterns: Vec<Option<Vec<String>>>,
    policies_text: String,
    schema: Schema,
    schema_text: String,
    entities_json: String,
    /// (tenant, principal) → the principal entity, with every inherited
    /// role as a parent, and those roles sorted.
    principals: HashMap<(String, String), (Entity, Vec<String>)>,
    /// principal → roles (with inherited ones) bound with `tenant: "*"`.
    everywhere: HashMap<String, Vec<String>>,
    os_users: HashMap<String, String>,
    actions: Vec<EntityUid>,
    warnings: Vec<Diagnostic>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz")
            .field("origin", &self.origin)
            .field("rules", &self.rules.len())
            .field("principals", &self.principals.len())
            .finish_non_exhaustive()
    }
}

/// Checks an RBAC source as `warden authz check` does: every problem,
/// errors and warnings, sorted by position.
pub fn check(source: &str, origin: &str) -> Vec<Diagnostic> {
    check_at(source, origin, time::now())
}

/// [`check`] as of `now` (unix seconds), which decides what has expired.
pub fn check_at(source: &str, origin: &str, now: i64) -> Vec<Diagnostic> {
    match build(source, origin, now) {
        Ok(authz) => authz.warnings,
        Err(diagnostics) => diagnostics,
    }
}

fn build(source: &str, origin: &str, now: i64) -> Result<Authz, Vec<Diagnostic>> {
    let mut diags = Diagnostics::new(origin);
    let rbac = parse_rbac(source, &mut diags);
    lint::lint(&rbac, now, &mut diags);
    if rbac.rules.is_empty() && !diags.has_errors() {
        diags.warning(
            Location { line: 1, column: 1 },
            "the file has no rules: every request is denied",
        );
    }
    if diags.has_errors() {
        return Err(diags.into_sorted());
    }
    match Authz::compile(&rbac, origin) {
        Ok(mut authz) => {
            authz.warnings = diags.into_sorted();
            Ok(authz)
        }
        Err((at, message)) => {
            diags.error(at, message);
            Err(diags.into_sorted())
        }
    }
}

impl Authz {
    /// Parses, compiles and validates an RBAC source. Errors (with
    /// positions) if anything is wrong; warnings are kept in [`Authz::warnings`].
    pub fn load(source: &str, origin: &str) -> Result<Authz, Vec<Diagnostic>> {
        build(source, origin, time::now())
    }

    fn compile(rbac: &Rbac, origin: &str) -> Result<Authz, (Location, String)> {
        let top = Location { line: 1, column: 1 };
        let schema = compile::schema().map_err(|e| (top, e))?;
        let mut policies = PolicySet::new();
        let mut policies_by_role: Vec<HashMap<String, Vec<(Policy, usize)>>> =
            vec![HashMap::new(); Action::ALL.len()];
        let mut patterns = Vec::new();
        let mut policies_text = String::new();
        let mut rules = Vec::new();
        let mut rule_by_policy = HashMap::new();
        for rule in &rbac.rules {
            let text = compile::policy_text(rule, origin);
            let id = PolicyId::new(rule.id());
            let policy = Policy::parse(Some(id.clone()), &text).map_err(|e| {
                (
                    rule.at,
                    format!(
                        "{}: the compiled Cedar policy does not parse: {e}",
                        rule.id()
                    ),
                )
            })?;
            let add = |set: &mut PolicySet, policy: Policy| {
                set.add(policy)
                    .map_err(|e| (rule.at, format!("{}: {e}", rule.id())))
            };
            policies_by_role[rule.action.index()]
                .entry(rule.role.name.clone())
                .or_default()
                .push((policy.clone(), rules.len()));
            // The policy's `like` of each pattern, read back: `*` is any
            // text; a backslash (Cedar's escape) is left to Cedar.
            patterns.push(
                (!rule.resources.iter().any(|p| p == "*" || p.contains('\\')))
                    .then(|| rule.resources.clone()),
            );
            add(&mut policies, policy)?;
            policies_text.push_str(&format!("// {}\n", summarize(rule)));
            policies_text.push_str(&text);
            policies_text.push('\n');
            rule_by_policy.insert(id, rules.len());
            rules.push(RuleRef {
                id: rule.id(),
                file: origin.to_owned(),
                line: rule.at.line,
                column: rule.at.column,
                text: summarize(rule),
                effect: rule.effect,
                expires: rule.expires,
            });
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if let Some(error) = validation.validation_errors().next() {
            let at = rule_by_policy
                .get(error.policy_id())
                .map_or(top, |&i| Location {
                    line: rules[i].line,
                    column: rules[i].column,
                });
            return Err((
                at,
                format!("the compiled Cedar policy fails validation: {error}"),
            ));
        }

        let ancestors = role_ancestors(rbac);
        let with_ancestors = |roles: &mut Vec<String>, role: &str| {
            for r in ancestors.get(role).into_iter().flatten() {
                if !roles.contains(r) {
                    roles.push(r.clone());
                }
            }
        };
        let mut everywhere: HashMap<String, Vec<String>> = HashMap::new();
        let mut direct: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut tenants: BTreeSet<String> = BTreeSet::new();
        for binding in &rbac.bindings {
            for principal in &binding.principals {
                let roles: &mut Vec<String> = match &binding.tenant {
                    Some(t) => {
                        tenants.insert(t.clone());
                        direct
                            .entry((t.clone(), principal.name.clone()))
                            .or_default()
                    }
                    None => everywhere.entry(principal.name.clone()).or_default(),
                };
                for role in &binding.roles {
                    if !roles.contains(&role.name) {
                        roles.push(role.name.clone());
                    }
                }
            }
        }
        for rule in &rbac.rules {
            tenants.extend(rule.when.tenants.iter().cloned());
        }
        // For decisions: every inherited role as a direct parent, so each
        // request's entity slice is just the principal and the resource.
        let flatten = |roles: &[String]| {
            let mut all = Vec::new();
            for role in roles {
                with_ancestors(&mut all, role);
            }
            all
        };
        let principals = direct
            .iter()
            .map(|((tenant, name), roles)| {
                let mut roles = roles.clone();
                roles.extend(everywhere.get(name).into_iter().flatten().cloned());
                let mut roles = flatten(&roles);
                let entity = principal_entity(name, tenant, &roles);
                roles.sort_unstable();
                ((tenant.clone(), name.clone()), (entity, roles))
            })
            .collect();
        let everywhere_flat: HashMap<String, Vec<String>> = everywhere
            .iter()
            .map(|(name, roles)| {
                let mut roles = flatten(roles);
                roles.sort_unstable();
                (name.clone(), roles)
            })
            .collect();

        // For export: direct parents only, as written; a `tenant: "*"`
        // binding appears once per tenant named in the file.
        let mut exported: Vec<Entity> = rbac
            .roles
            .iter()
            .map(|r| {
                let parents: Vec<String> = r.inherits.iter().map(|p| p.name.clone()).collect();
                role_entity(&r.name, &parents)
            })
            .collect();
        exported.extend(tenants.iter().map(|t| tenant_entity(t)));
        let mut pairs: BTreeSet<(String, String)> = direct.keys().cloned().collect();
        for name in everywhere.keys() {
            for tenant in &tenants {
                pairs.insert((tenant.clone(), name.clone()));
            }
        }
        for (tenant, name) in &pairs {
            let mut roles = direct
                .get(&(tenant.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            for role in everywhere.get(name).into_iter().flatten() {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
            exported.push(principal_entity(name, tenant, &roles));
        }
        let invalid = |e: String| (top, format!("the compiled Cedar entities are invalid: {e}"));
        let entities =
            Entities::from_entities(exported, Some(&schema)).map_err(|e| invalid(e.to_string()))?;
        let entities_json = entities
            .to_json_value()
            .map(|json| serde_json::to_string_pretty(&json).unwrap_or_default())
            .map_err(|e| invalid(e.to_string()))?;

        Ok(Authz {
            origin: origin.to_owned(),
            rules,
            rule_by_policy,
            policies_by_role,
            slices: Mutex::new(HashMap::new()),
            patterns,
            policies_text,
            schema,
            schema_text: compile::schema_text(),
            entities_json,
            principals,
            everywhere: everywhere_flat,
            os_users: rbac
                .os_users
                .iter()
                .map(|(user, p)| (user.clone(), p.name.clone()))
                .collect(),
            actions: Action::ALL
                .iter()
                .map(|a| uid("Action", a.as_str()))
                .collect(),
            warnings: Vec::new(),
            authorizer: Authorizer::new(),
        })
    }

    /// The warnings found at load (sorted by position).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The file name given at load.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> &[RuleRef] {
        &self.rules
    }

    /// The principal an OS user acts as (`os_users: {root: admin}`).
    pub fn os_principal(&self, os_user: &str) -> Option<&str> {
        self.os_users.get(os_user).map(String::as_str)
    }

    /// The time-bound overrides (rules with `expires`), to audit their grant.
    pub fn overrides(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.iter().filter(|r| r.expires.is_some())
    }

    /// The overrides that lapse in `(after, until]` (unix seconds), to audit their lapse.
    pub fn lapsed_between(&self, after: i64, until: i64) -> impl Iterator<Item = &RuleRef> {
        self.overrides()
            .filter(move |r| r.expires.is_some_and(|e| after < e && e <= until))
    }

    /// The compiled policies, schema and entities, for any Cedar implementation.
    pub fn export_cedar(&self) -> CedarExport {
        CedarExport {
            policies: self.policies_text.clone(),
            schema: self.schema_text.clone(),
            entities: self.entities_json.clone(),
        }
    }

    /// The Cedar schema the policies were validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decides a request. Never fails: a malformed request is denied.
    pub fn decide(&self, request: &Request) -> Decision {
        let resource = &request.resource;
        if request.action.resource_kind() != resource.kind {
            return Decision::refused(format!(
                "{} applies to a {}, not a {}",
                request.action,
                request.action.resource_kind(),
                resource.kind
            ));
        }
        for tenant in [&request.tenant, resource_tenant(resource)] {
            if let Err(why) = parse::valid_tenant(tenant) {
                return Decision::refused(format!("invalid tenant name {tenant:?}: {why}"));
            }
        }
        let (principal, roles) = self.principal(&request.principal, &request.tenant);
        let mut policies = PolicySet::new();
        for (policy, rule) in self.slice(request.action.index(), roles).iter() {
            // A policy whose resource patterns all miss cannot apply.
            let applies = self.patterns[*rule]
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| like(p, &resource.name)));
            if applies {
                // Ids are unique in the whole set, so in any part of it.
                let _ = policies.add(policy.clone());
            }
        }
        if policies.is_empty() {
            // No policy can apply: Cedar's answer is a deny with no
            // deciding policy and no errors, without asking it. The
            // request is still checked as it would have been.
            if let Some(e) = request
                .capabilities
                .iter()
                .find_map(|c| c.parse::<Capability>().err())
            {
                return Decision::refused(format!("invalid requested capability: {e}"));
            }
            return Decision {
                allowed: false,
                deciding: Vec::new(),
                reason: no_rule_reason(request),
            };
        }
        let context = match request_context(request) {
            Ok(context) => context,
            Err(reason) => return Decision::refused(reason),
        };
        let resource_entity = request_resource_entity(resource);
        let cedar_request = match cedar_policy::Request::new(
            principal.uid(),
            self.actions[request.action.index()].clone(),
            resource_entity.uid(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return Decision::refused(format!("cannot build the Cedar request: {e}")),
        };
        let entities = match Entities::from_entities([principal, resource_entity], None) {
            Ok(e) => e,
            Err(e) => return Decision::refused(format!("cannot build the Cedar entities: {e}")),
        };
        let response = self
            .authorizer
            .is_authorized(&cedar_request, &policies, &entities);
        self.decision(request, &response)
    }

    /// The principal's entity and its sorted, flattened roles.
    fn principal(&self, name: &str, tenant: &str) -> (Entity, &[String]) {
        if let Some((entity, roles)) = self.principals.get(&(tenant.to_owned(), name.to_owned())) {
            return (entity.clone(), roles);
        }
        let roles = self.everywhere.get(name).map_or(&[][..], Vec::as_slice);
        (principal_entity(name, tenant, roles), roles)
    }

    /// The policies of `action` whose role is one of `roles` (sorted): the
    /// same decision as the whole set, since no other policy's scope can
    /// match this principal, with a fraction of the evaluation.
    fn slice(&self, action: usize, roles: &[String]) -> Arc<Slice> {
        let key = (action, roles.to_vec());
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = slices.get(&key) {
            return set.clone();
        }
        let mut set = Vec::new();
        for role in roles {
            set.extend(
                self.policies_by_role[action]
                    .get(role)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        let set = Arc::new(set);
        if slices.len() >= SLICE_CACHE {
            slices.clear();
        }
        slices.insert(key, set.clone());
        set
    }

    fn decision(&self, request: &Request, response: &cedar_policy::Response) -> Decision {
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        let mut deciding: Vec<RuleRef> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.rule_by_policy.get(id))
            .map(|&i| self.rules[i].clone())
            .collect();
        deciding.sort_by_key(|r| (r.line, r.column));
        let cite = |rules: &[RuleRef]| {
            rules
                .iter()
                .map(|r| format!("{} ({}:{}:{})", r.id, r.file, r.line, r.column))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut reason = if allowed {
            format!("allowed by {}", cite(&deciding))
        } else if !deciding.is_empty() {
            format!("denied by {}", cite(&deciding))
        } else {
            no_rule_reason(request)
        };
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            let _ = write!(
                reason,
                " (ignored after evaluation errors: {})",
                errors.join("; ")
            );
        }
        Decision {
            allowed,
            deciding,
            reason,
        }
    }

    /// `warden authz explain`: the decision and the rules that made it, with positions.
    pub fn explain(&self, request: &Request) -> String {
        let decision = self.decide(request);
        let mut out = format!(
            "{}: {} (tenant {}) {} {} {:?} of tenant {}\n",
            if decision.allowed { "allow" } else { "deny" },
            request.principal,
            request.tenant,
            request.action,
            request.resource.kind,
            request.resource.name,
            resource_tenant(&request.resource),
        );
        if !request.capabilities.is_empty() {
            let _ = writeln!(out, "  capabilities: {}", request.capabilities.join(", "));
        }
        let _ = writeln!(out, "  reason: {}", decision.reason);
        for rule in &decision.deciding {
            let _ = writeln!(out, "  {rule}");
            if let (true, Some(expires)) = (decision.allowed, rule.expires) {
                let _ = writeln!(out, "    override, lapses at {}", format_timestamp(expires));
            }
        }
        out
    }

    /// `warden authz test`: runs a cases file (a YAML list of requests
    /// with `expect: allow|deny`; see docs/authz.md).
    pub fn run_cases(
        &self,
        source: &str,
        origin: &str,
    ) -> Result<Vec<CaseResult>, Vec<Diagnostic>> {
        let mut diags = Diagnostics::new(origin);
        let cases = parse_cases(source, &mut diags);
        if diags.has_errors() {
            return Err(diags.into_sorted());
        }
        Ok(cases
            .into_iter()
            .map(|(index, at, request, expect_allowed)| CaseResult {
                index,
                line: at.line,
                column: at.column,
                expect_allowed,
                decision: self.decide(&request),
            })
            .collect())
    }
}

fn resource_tenant(resource: &Resource) -> &str {
    match resource.kind {
        ResourceKind::Tenant => &resource.name,
        _ => &resource.tenant,
    }
}

fn request_resource_entity(resource: &Resource) -> Entity {
    match resource.kind {
        ResourceKind::Tenant => tenant_entity(&resource.name),
        kind => resource_entity(
            kind.cedar_type(),
            &resource.name,
            &resource.tenant,
            &resource.tags,
        ),
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The Cedar context of a request (see docs/authz.md, "Request context").
fn request_context(request: &Request) -> Result<Context, String> {
    let mut requested = Vec::with_capacity(request.capabilities.len());
    for text in &request.capabilities {
        match text.parse::<Capability>() {
            Ok(cap) => requested.push(cap),
            Err(e) => return Err(format!("invalid requested capability: {e}")),
        }
    }
    let caps: CapabilityContext = capability_context(&requested);
    let slots = (0..CAPABILITY_SLOTS).map(|i| {
        let keys = caps.slots.get(i).map_or(&[][..], Vec::as_slice);
        (
            format!("c{i}"),
            RestrictedExpression::new_set(
                keys.iter().cloned().map(RestrictedExpression::new_string),
            ),
        )
    });
    let limits = LIMIT_FIELDS
        .iter()
        .zip(caps.limits)
        .map(|(f, v)| ((*f).to_owned(), RestrictedExpression::new_long(v)));
    let record = |pairs: Vec<(String, RestrictedExpression)>| {
        RestrictedExpression::new_record(pairs).map_err(|e| e.to_string())
    };
    Context::from_pairs([
        (
            "now".to_owned(),
            RestrictedExpression::new_long(request.now),
        ),
        (
            "minute_of_day".to_owned(),
            RestrictedExpression::new_long(minute_of_day(request.now)),
        ),
        (
            "input_bytes".to_owned(),
            RestrictedExpression::new_long(clamp(request.input_bytes)),
        ),
        ("caps".to_owned(), record(slots.collect())?),
        (
            "caps_count".to_owned(),
            RestrictedExpression::new_long(caps.slots.len().min(CAPABILITY_SLOTS) as i64),
        ),
        (
            "caps_overflow".to_owned(),
            RestrictedExpression::new_bool(caps.overflow),
        ),
        ("limits".to_owned(), record(limits.collect())?),
    ])
    .map_err(|e| e.to_string())
}

/// The Cedar request of `request` as JSON (principal, action, resource,
/// context) plus the resource entity, exactly as an outside Cedar
/// implementation should build them from the documented rules.
pub fn cedar_request_json(request: &Request) -> Result<serde_json::Value, String> {
    let context = request_context(request)?;
    let resource = request_resource_entity(&request.resource);
    let uid_json = |uid: &EntityUid| serde_json::json!({"type": uid.type_name().to_string(), "id": uid.id().unescaped()});
    let principal = uid(
        "Principal",
        &format!("{}/{}", request.tenant, request.principal),
    );
    Ok(serde_json::json!({
        "principal": uid_json(&principal),
        "action": uid_json(&uid("Action", request.action.as_str())),
        "resource": uid_json(&resource.uid()),
        "context": context.to_json_value().map_err(|e| e.to_string())?,
        "resource_entity": resource.to_json_value().map_err(|e| e.to_string())?,
    }))
}

/// One line describing a rule.
fn summarize(rule: &Rule) -> String {
    let mut text = format!(
        "{} {} to role {} on {}",
        rule.effect,
        rule.action,
        rule.role.name,
        rule.resources.join(", ")
    );
    if let Some(ceiling) = &rule.ceiling {
        let caps: Vec<String> = ceiling.iter().map(ToString::to_string).collect();
        let _ = write!(text, " with at most [{}]", caps.join(", "));
    }
    let when = &rule.when;
    if !when.tenants.is_empty() {
        let _ = write!(text, " in tenant {}", when.tenants.join(" or "));
    }
    if !when.tags.is_empty() {
        let _ = write!(text, " tagged {}", when.tags.join(" and "));
    }
    if let Some((start, end)) = when.hours {
        let _ = write!(
            text,
            " between {:02}:{:02} and {:02}:{:02} UTC",
            start / 60,
            start % 60,
            end / 60,
            end % 60
        );
    }
    if let Some(max) = when.max_input_bytes {
        let _ = write!(text, " for inputs of at most {max} bytes");
    }
    if rule.cross_tenant {
        text.push_str(" in any tenant");
    }
    if let Some(expires) = rule.expires {
        let _ = write!(text, " until {}", format_timestamp(expires));
    }
    text
}

const CASE_KEYS: [&str; 10] = [
    "principal",
    "tenant",
    "action",
    "resource",
    "resource_tenant",
    "tags",
    "capabilities",
    "input_bytes",
    "now",
    "expect",
];

fn parse_cases(source: &str, diags: &mut Diagnostics<'_>) -> Vec<(usize, Location, Request, bool)> {
    let root = match warden_policy::parse_yaml(source) {
        Ok(Some(root)) => root,
        Ok(None) => return Vec::new(),
        Err(e) => {
            diags.error(e.location, e.message);
            return Vec::new();
        }
    };
    let YamlNodeKind::Sequence(items) = &root.kind else {
        diags.error(root.location, "a cases file must be a list of cases");
        return Vec::new();
    };
    let mut cases = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if let Some(case) = parse_case(item, diags) {
            cases.push((index, item.location, case.0, case.1));
        }
    }
    cases
}

fn parse_case(item: &YamlNode, diags: &mut Diagnostics<'_>) -> Option<(Request, bool)> {
    let fields = diags.fields(item, "a case", &CASE_KEYS)?;
    let before = diags.list.len();
    let required = |key: &str, diags: &mut Diagnostics<'_>| -> Option<String> {
        match fields.get(key) {
            Some(n) => diags.scalar(n, key).map(str::to_owned),
            None => {
                diags.error(item.location, format!("a case needs {key}"));
                None
            }
        }
    };
    let principal = required("principal", diags);
    let tenant = required("tenant", diags);
    let action_text = required("action", diags);
    let resource = required("resource", diags);
    let expect = required("expect", diags);
    let action = action_text.and_then(|t| match t.parse::<Action>() {
        Ok(a) => Some(a),
        Err(e) => {
            diags.error(
                fields.get("action").map_or(item.location, |n| n.location),
                e.to_string(),
            );
            None
        }
    });
    let expect_allowed = expect.and_then(|e| match e.as_str() {
        "allow" => Some(true),
        "deny" => Some(false),
        other => {
            diags.error(
                fields.get("expect").map_or(item.location, |n| n.location),
                format!("expect must be allow or deny, not {other:?}"),
            );
            None
        }
    });
    let list = |key: &str, diags: &mut Diagnostics<'_>| -> Vec<String> {
        fields
            .get(key)
            .map(|n| diags.names(n, key, |_| Ok(())))
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    let tags = list("tags", diags);
    let capabilities = list("capabilities", diags);
    let resource_tenant = match fields.get("resource_tenant") {
        Some(n) => diags.scalar(n, "resource_tenant").map(str::to_owned),
        None => tenant.clone(),
    };
    let input_bytes = match fields.get("input_bytes") {
        Some(n) => {
            diags
                .scalar(n, "input_bytes")
                .and_then(|t| match warden_policy::parse_size(t) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        diags.error(n.location, format!("invalid input_bytes {t:?}: {e}"));
                        None
                    }
                })
        }
        None => Some(0),
    };
    let now = match fields.get("now") {
        Some(n) => diags.scalar(n, "now").and_then(|t| {
            let parsed = parse_timestamp(t).or_else(|| t.parse().ok());
            if parsed.is_none() {
                diags.error(n.location, format!("invalid now {t:?}: expected a UTC time like 2026-06-01T10:00Z or unix seconds"));
            }
            parsed
        }),
        None => Some(time::now()),
    };
    if diags.list[before..]
        .iter()
        .any(|d| d.severity == Severity::Error)
    {
        return None;
    }
    let action = action?;
    Some((
        Request {
            principal: principal?,
            tenant: tenant?,
            action,
            resource: Resource {
                kind: action.resource_kind(),
                name: resource?,
                tenant: resource_tenant?,
                tags,
            },
            capabilities,
            input_bytes: input_bytes?,
            now: now?,
        },
        expect_allowed?,
    ))
}

#[cfg(test)]
mod like_tests {
    use super::like;
    use cedar_policy::{eval_expression, Context, Entities, EvalResult, Expression, Request};

    fn words(alphabet: &[char], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// The prefilter's `like` agrees with Cedar's on every pattern and
    /// text up to four characters (patterns of a, b and *).
    #[test]
    fn like_agrees_with_cedar() {
        let request = Request::new(
            r#"P::"p""#.parse().unwrap(),
            r#"A::"a""#.parse().unwrap(),
            r#"R::"r""#.parse().unwrap(),
            Context::empty(),
            None,
        )
        .unwrap();
        let entities = Entities::empty();
        for pattern in words(&['a', 'b', '*'], 4) {
            for text in words(&['a', 'b'], 4) {
                let expr: Expression = format!("\"{text}\" like \"{pattern}\"").parse().unwrap();
                let cedar = eval_expression(&request, &entities, &expr).unwrap();
                assert_eq!(
                    cedar,
                    EvalResult::Bool(like(&pattern, &text)),
                    "{text:?} like {pattern:?}"
                );
            }
        }
    }
}
