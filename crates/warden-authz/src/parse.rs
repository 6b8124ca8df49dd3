//! YAML (as a located tree) → [`Rbac`], with a diagnostic for everything
//! that is wrong, each at the node it is about.

use std::collections::{HashMap, HashSet};

use warden_policy::{
    parse_size, parse_yaml, Capability, Location, Severity, YamlNode, YamlNodeKind,
};

use crate::model::{Action, Binding, Conditions, Diagnostic, Effect, Named, Rbac, RoleDef, Rule};
use crate::time::{parse_hours, parse_timestamp};

/// Largest byte count a `max_input_bytes` may name (Cedar's Long is i64).
const MAX_INPUT_LIMIT: u64 = 1 << 62;

pub(crate) struct Diagnostics<'a> {
    origin: &'a str,
    pub list: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(origin: &'a str) -> Self {
        Diagnostics {
            origin,
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, severity: Severity, at: Location, message: impl Into<String>) {
        self.list.push(Diagnostic {
            severity,
            file: self.origin.to_owned(),
            line: at.line,
            column: at.column,
            message: message.into(),
        });
    }

    pub fn error(&mut self, at: Location, message: impl Into<String>) {
        self.push(Severity::Error, at, message);
    }

    pub fn warning(&mut self, at: Location, message: impl Into<String>) {
        self.push(Severity::Warning, at, message);
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorted by position, then severity.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.column, d.severity));
        self.list.dedup();
        self.list
    }
}

/// The mapping entries of a node whose keys were checked: unknown and
/// duplicate keys are reported, the rest can be looked up.
pub(crate) struct Fields<'n> {
    entries: Vec<(&'n str, &'n YamlNode)>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n YamlNode> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

pub(crate) fn scalar_text(node: &YamlNode) -> Option<&str> {
    match &node.kind {
        YamlNodeKind::Scalar { text, .. } if !node.is_null() => Some(text),
        _ => None,
    }
}

impl Diagnostics<'_> {
    /// `node` as a mapping with only `allowed` keys (null counts as empty).
    pub fn fields<'n>(
        &mut self,
        node: &'n YamlNode,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.kind {
            YamlNodeKind::Mapping(entries) => entries.as_slice(),
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node.location,
                    format!("{what} must be a mapping, not {}", node.describe()),
                );
                return None;
            }
        };
        let mut fields = Fields {
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = scalar_text(key) else {
                self.error(key.location, format!("a key of {what} must be a scalar"));
                continue;
            };
            if !allowed.contains(&name) {
                self.error(
                    key.location,
                    format!(
                        "unknown key {name:?} in {what}: expected {}",
                        allowed.join(", ")
                    ),
                );
            } else if fields.get(name).is_some() {
                self.error(key.location, format!("duplicate key {name:?} in {what}"));
            } else {
                fields.entries.push((name, value));
            }
        }
        Some(fields)
    }

    pub fn scalar<'n>(&mut self, node: &'n YamlNode, what: &str) -> Option<&'n str> {
        let text = scalar_text(node);
        if text.is_none() {
            self.error(
                node.location,
                format!("{what} must be a scalar, not {}", node.describe()),
            );
        }
        text
    }

    /// One scalar or a list of scalars, each checked by `valid`.
    pub fn names(
        &mut self,
        node: &YamlNode,
        what: &str,
        valid: fn(&str) -> Result<(), String>,
    ) -> Vec<Named> {
        let items: Vec<&YamlNode> = match &node.kind {
            YamlNodeKind::Sequence(items) => items.iter().collect(),
            YamlNodeKind::Scalar { .. } if !node.is_null() => vec![node],
            _ if node.is_null() => Vec::new(),
            _ => {
                self.error(
                    node.location,
                    format!(
                        "{what} must be a name or a list of names, not {}",
                        node.describe()
                    ),
                );
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for item in items {
            let Some(text) = self.scalar(item, what) else {
                continue;
            };
            match valid(text) {
                Ok(()) => names.push(Named {
                    name: text.to_owned(),
                    at: item.location,
                }),
                Err(why) => self.error(item.location, format!("invalid {what} {text:?}: {why}")),
            }
        }
        names
    }
}

fn valid_chars(text: &str, extra: &[u8], max: usize) -> Result<(), String> {
    let ok_first = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if text.len() > max {
        return Err(format!("longer than {max} bytes"));
    }
    if !ok_first
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
    {
        return Err(format!(
            "expected ASCII letters, digits, '_' and any of {:?}, starting with a letter, digit or '_'",
            String::from_utf8_lossy(extra)
        ));
    }
    Ok(())
}

/// Role names: `[A-Za-z0-9_][A-Za-z0-9_.-]*`.
pub(crate) fn valid_role(text: &str) -> Result<(), String> {
    valid_chars(text, b".-", 128)
}

/// Tenant names: like roles (no `/`: it separates tenant and name in entity ids).
pub(crate) fn valid_tenant(text: &str) -> Result<(), String> {
    valid_chars(text, b".-", 128)
}

/// Principal names: letters, digits and `_ . - @ + :` (e-mail addresses,
/// `user:root`), no `/`.
pub(crate) fn valid_principal(text: &str) -> Result<(), String> {
    valid_chars(text, b".-@+:", 256)
}

pub(crate) fn valid_tag(text: &str) -> Result<(), String> {
    valid_chars(text, b".-:=/", 128)
}

/// Resource name patterns: names of processors, secrets, leases and
/// tenants, `*` matching any run of characters.
fn valid_pattern(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 256
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/:@*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("expected 1 to 256 ASCII letters, digits and any of \"_.-/:@*\"".to_owned())
    }
}

const TOP_KEYS: [&str; 4] = ["os_users", "roles", "bindings", "rules"];
const RULE_KEYS: [&str; 8] = [
    "allow",
    "deny",
    "role",
    "resources",
    "ceiling",
    "when",
    "expires",
    "cross_tenant",
];
const WHEN_KEYS: [&str; 4] = ["tenant", "tags", "hours", "max_input_bytes"];

/// Parses an RBAC source: the valid parts as an [`Rbac`], problems into `diags`.
pub(crate) fn parse_rbac(source: &str, diags: &mut Diagnostics<'_>) -> Rbac {
    let mut rbac = Rbac::default();
    let root = match parse_yaml(source) {
        Ok(Some(root)) => root,
        Ok(None) => return rbac,
        Err(e) => {
            diags.error(e.location, e.message);
            return rbac;
        }
    };
    let Some(top) = diags.fields(&root, "the RBAC file", &TOP_KEYS) else {
        return rbac;
    };
    if let Some(node) = top.get("roles") {
        parse_roles(node, diags, &mut rbac);
    }
    let known: HashSet<String> = rbac.roles.iter().map(|r| r.name.clone()).collect();
    let check_role = |named: &Named, diags: &mut Diagnostics<'_>| {
        let ok = known.contains(&named.name);
        if !ok {
            diags.error(named.at, format!("unknown role {:?}", named.name));
        }
        ok
    };
    for role in &mut rbac.roles {
        role.inherits.retain(|parent| check_role(parent, diags));
    }
    if let Some(node) = top.get("bindings") {
        parse_bindings(node, diags, &mut rbac);
        for binding in &mut rbac.bindings {
            binding.roles.retain(|role| check_role(role, diags));
        }
    }
    if let Some(node) = top.get("os_users") {
        parse_os_users(node, diags, &mut rbac);
    }
    if let Some(node) = top.get("rules") {
        match &node.kind {
            YamlNodeKind::Sequence(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(rule) = parse_rule(index, item, diags) {
                        if check_role(&rule.role, diags) {
                            rbac.rules.push(rule);
                        }
                    }
                }
            }
            _ if node.is_null() => {}
            _ => diags.error(
                node.location,
                format!("rules must be a list, not {}", node.describe()),
            ),
        }
    }
    rbac
}

fn parse_roles(node: &YamlNode, diags: &mut Diagnostics<'_>, rbac: &mut Rbac) {
    let YamlNodeKind::Mapping(entries) = &node.kind else {
        if !node.is_null() {
            diags.error(
                node.location,
                format!(
                    "roles must be a mapping of role names, not {}",
                    node.describe()
                ),
            );
        }
        return;
    };
    for (key, value) in entries {
        let Some(name) = diags.scalar(key, "a role name") else {
            continue;
        };
        if let Err(why) = valid_role(name) {
            diags.error(key.location, format!("invalid role name {name:?}: {why}"));
            continue;
        }
        if rbac.roles.iter().any(|r| r.name == name) {
            diags.error(key.location, format!("role {name:?} is defined twice"));
            continue;
        }
        let what = format!("role {name:?}");
        let inherits = match diags.fields(value, &what, &["inherits"]) {
            Some(fields) => fields
                .get("inherits")
                .map(|n| diags.names(n, "role name", valid_role))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        rbac.roles.push(RoleDef {
            name: name.to_owned(),
            inherits,
        });
    }
}

fn parse_bindings(node: &YamlNode, diags: &mut Diagnostics<'_>, rbac: &mut Rbac) {
    let YamlNodeKind::Sequence(items) = &node.kind else {
        if !node.is_null() {
            diags.error(
                node.location,
                format!("bindings must be a list, not {}", node.describe()),
            );
        }
        return;
    };
    for item in items {
        let Some(fields) = diags.fields(
            item,
            "a binding",
            &["principal", "principals", "tenant", "roles"],
        ) else {
            continue;
        };
        let mut principals = Vec::new();
        for key in ["principal", "principals"] {
            if let Some(n) = fields.get(key) {
                principals.extend(diags.names(n, "principal name", valid_principal));
            }
        }
        let tenant = match fields.get("tenant") {
            Some(n) => match diags.scalar(n, "tenant") {
                Some("*") => Some(None),
                Some(text) => match valid_tenant(text) {
                    Ok(()) => Some(Some(text.to_owned())),
                    Err(why) => {
                        diags.error(n.location, format!("invalid tenant {text:?}: {why}"));
                        None
                    }
                },
                None => None,
            },
            None => {
                diags.error(
                    item.location,
                    "a binding needs a tenant (a tenant name, or \"*\" for every tenant)",
                );
                None
            }
        };
        let roles = match fields.get("roles") {
            Some(n) => diags.names(n, "role name", valid_role),
            None => {
                diags.error(item.location, "a binding needs roles");
                Vec::new()
            }
        };
        if fields.get("principal").is_none() && fields.get("principals").is_none() {
            diags.error(item.location, "a binding needs a principal (or principals)");
        }
        if let Some(tenant) = tenant {
            rbac.bindings.push(Binding {
                principals,
                tenant,
                roles,
            });
        }
    }
}

fn parse_os_users(node: &YamlNode, diags: &mut Diagnostics<'_>, rbac: &mut Rbac) {
    let YamlNodeKind::Mapping(entries) = &node.kind else {
        if !node.is_null() {
            diags.error(
                node.location,
                format!(
                    "os_users must map OS user names to principals, not be {}",
                    node.describe()
                ),
            );
        }
        return;
    };
    let bound: HashSet<&str> = rbac
        .bindings
        .iter()
        .flat_map(|b| b.principals.iter().map(|p| p.name.as_str()))
        .collect();
    let mut warnings = Vec::new();
    for (key, value) in entries {
        let (Some(user), Some(principal)) = (
            diags.scalar(key, "an OS user name"),
            diags.scalar(value, "a principal name"),
        ) else {
            continue;
        };
        if rbac.os_users.iter().any(|(u, _)| u == user) {
            diags.error(key.location, format!("OS user {user:?} is mapped twice"));
            continue;
        }
        if let Err(why) = valid_principal(principal) {
            diags.error(
                value.location,
                format!("invalid principal name {principal:?}: {why}"),
            );
            continue;
        }
        if !bound.contains(principal) {
            warnings.push((
                value.location,
                format!("principal {principal:?} (for OS user {user:?}) has no bindings: every request is denied"),
            ));
        }
        rbac.os_users.push((
            user.to_owned(),
            Named {
                name: principal.to_owned(),
                at: value.location,
            },
        ));
    }
    for (at, message) in warnings {
        diags.warning(at, message);
    }
}

fn parse_rule(index: usize, item: &YamlNode, diags: &mut Diagnostics<'_>) -> Option<Rule> {
    let what = format!("rules[{index}]");
    let fields = diags.fields(item, &what, &RULE_KEYS)?;
    let errors_before = diags.list.len();
    let (effect, action_node) = match (fields.get("allow"), fields.get("deny")) {
        (Some(n), None) => (Effect::Allow, n),
        (None, Some(n)) => (Effect::Deny, n),
        (Some(_), Some(n)) => {
            diags.error(
                n.location,
                format!("{what} has both allow and deny: write two rules"),
            );
            return None;
        }
        (None, None) => {
            diags.error(
                item.location,
                format!("{what} needs `allow: ACTION` or `deny: ACTION`"),
            );
            return None;
        }
    };
    let action =
        diags
            .scalar(action_node, "an action")
            .and_then(|text| match text.parse::<Action>() {
                Ok(a) => Some(a),
                Err(e) => {
                    diags.error(action_node.location, e.to_string());
                    None
                }
            });
    let role = match fields.get("role") {
        Some(n) => diags
            .scalar(n, "role")
            .and_then(|text| match valid_role(text) {
                Ok(()) => Some(Named {
                    name: text.to_owned(),
                    at: n.location,
                }),
                Err(why) => {
                    diags.error(n.location, format!("invalid role name {text:?}: {why}"));
                    None
                }
            }),
        None => {
            diags.error(item.location, format!("{what} needs a role"));
            None
        }
    };
    let resources = match fields.get("resources") {
        Some(n) => {
            let patterns = diags.names(n, "resource pattern", valid_pattern);
            if patterns.is_empty() && diags.list.len() == errors_before {
                diags.error(
                    n.location,
                    format!("{what} names no resources (omit `resources` for all)"),
                );
            }
            patterns.into_iter().map(|p| p.name).collect()
        }
        None => vec!["*".to_owned()],
    };
    let ceiling = fields.get("ceiling").map(|n| parse_ceiling(n, diags));
    if let (Some(n), Some(a)) = (fields.get("ceiling"), action) {
        if a != Action::Invoke || effect == Effect::Deny {
            diags.error(
                n.location,
                "a capability ceiling applies only to `allow: invoke` rules",
            );
        }
    }
    let when = fields
        .get("when")
        .map(|n| parse_conditions(n, &what, diags))
        .unwrap_or_default();
    let expires_at = fields.get("expires").map(|n| n.location);
    let expires = fields.get("expires").and_then(|n| {
        let text = diags.scalar(n, "expires")?;
        let parsed = parse_timestamp(text);
        if parsed.is_none() {
            diags.error(
                n.location,
                format!("invalid expires {text:?}: expected a UTC time like 2026-12-31T00:00Z or a date like 2026-12-31"),
            );
        }
        parsed
    });
    let cross_tenant = match fields.get("cross_tenant") {
        Some(n) => match diags.scalar(n, "cross_tenant") {
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                diags.error(
                    n.location,
                    format!("cross_tenant must be true or false, not {other:?}"),
                );
                false
            }
            None => false,
        },
        None => false,
    };
    if diags.list[errors_before..]
        .iter()
        .any(|d| d.severity == Severity::Error)
    {
        return None;
    }
    Some(Rule {
        index,
        at: item.location,
        effect,
        action: action?,
        role: role?,
        resources,
        ceiling: ceiling.flatten(),
        when,
        expires,
        expires_at,
        cross_tenant,
    })
}

fn parse_ceiling(node: &YamlNode, diags: &mut Diagnostics<'_>) -> Option<Vec<Capability>> {
    let items: Vec<&YamlNode> = match &node.kind {
        YamlNodeKind::Sequence(items) => items.iter().collect(),
        YamlNodeKind::Scalar { .. } if !node.is_null() => vec![node],
        _ => {
            diags.error(
                node.location,
                format!(
                    "ceiling must be a list of capabilities, not {}",
                    node.describe()
                ),
            );
            return None;
        }
    };
    let mut ceiling = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(text) = diags.scalar(item, "a capability") else {
            ok = false;
            continue;
        };
        match text.parse::<Capability>() {
            Ok(cap) => ceiling.push(cap),
            Err(e) => {
                diags.error(item.location, format!("invalid ceiling capability: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(ceiling)
}

fn parse_conditions(node: &YamlNode, what: &str, diags: &mut Diagnostics<'_>) -> Conditions {
    let mut when = Conditions::default();
    let Some(fields) = diags.fields(node, &format!("`when` of {what}"), &WHEN_KEYS) else {
        return when;
    };
    if let Some(n) = fields.get("tenant") {
        when.tenants = dedup(diags.names(n, "tenant", valid_tenant));
    }
    if let Some(n) = fields.get("tags") {
        when.tags = dedup(diags.names(n, "tag", valid_tag));
    }
    if let Some(n) = fields.get("hours") {
        if let Some(text) = diags.scalar(n, "hours") {
            when.hours = parse_hours(text);
            if when.hours.is_none() {
                diags.error(
                    n.location,
                    format!("invalid hours {text:?}: expected HH:MM-HH:MM (UTC), e.g. 08:00-18:00"),
                );
            }
        }
    }
    if let Some(n) = fields.get("max_input_bytes") {
        if let Some(text) = diags.scalar(n, "max_input_bytes") {
            match parse_size(text) {
                Ok(bytes) if bytes <= MAX_INPUT_LIMIT => when.max_input_bytes = Some(bytes),
                Ok(_) => diags.error(
                    n.location,
                    format!("max_input_bytes is too large (at most {MAX_INPUT_LIMIT})"),
                ),
                Err(e) => diags.error(n.location, format!("invalid max_input_bytes {text:?}: {e}")),
            }
        }
    }
    when
}

fn dedup(names: Vec<Named>) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .into_iter()
        .filter_map(|n| seen.insert(n.name.clone()).then_some(n.name))
        .collect()
}

/// Every role's ancestors by inheritance, itself included (cycle-safe).
pub(crate) fn role_ancestors(rbac: &Rbac) -> HashMap<String, Vec<String>> {
    let parents: HashMap<&str, Vec<&str>> = rbac
        .roles
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.inherits.iter().map(|p| p.name.as_str()).collect(),
            )
        })
        .collect();
    rbac.roles
        .iter()
        .map(|role| {
            let mut seen = vec![role.name.clone()];
            let mut queue = vec![role.name.as_str()];
            while let Some(next) = queue.pop() {
                for parent in parents.get(next).into_iter().flatten() {
                    if !seen.iter().any(|s| s == parent) {
                        seen.push((*parent).to_owned());
                        queue.push(parent);
                    }
                }
            }
            (role.name.clone(), seen)
        })
        .collect()
}
