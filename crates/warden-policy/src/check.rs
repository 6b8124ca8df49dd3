//! Static analysis of a policy source: every problem, with its position.
//!
//! [`check`] and [`crate::parse_policy`] share one analysis, so a policy
//! parses exactly when `check` reports no error.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::capability::{Capability, HostPattern, PortPattern};
use crate::limits::{LimitField, LimitValue};
use crate::policy::{Grant, Location, Policy};
use crate::value::excerpt;
use crate::yaml::{self, Node, NodeKind};

/// Most grants accepted in one policy.
pub const MAX_GRANTS: usize = 4096;

/// System directories on which a write grant is reported as over-broad.
const SYSTEM_DIRS: [&str; 7] = ["/etc", "/usr", "/proc", "/sys", "/dev", "/boot", "/root"];

/// Host paths whose reading is reported as over-broad, and why: a grant
/// of one of them, inside one, or (for the files) around one.
const SENSITIVE_READS: [(&str, &str); 8] = [
    (
        "/proc",
        "exposes the host's processes (it covers the jail's own /proc)",
    ),
    ("/sys", "exposes the host's kernel and devices"),
    ("/dev", "exposes the host's devices"),
    ("/root", "gives access to root's home directory"),
    ("/home", "gives access to users' home directories"),
    ("/etc/shadow", "gives access to the host's password hashes"),
    (
        "/etc/gshadow",
        "gives access to the host's group password hashes",
    ),
    ("/etc/ssh", "gives access to the host's SSH keys"),
];

const TOP_KEYS: [&str; 6] = [
    "extends",
    "grants",
    "limits",
    "require_signed",
    "audit",
    "isolation",
];

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The policy cannot be used.
    Error,
    /// The policy works but is probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where in the source (1-based line and column of the offending node).
    pub location: Location,
    /// What is wrong, one line.
    pub message: String,
}

impl Diagnostic {
    /// `"policy.yaml:4:5: warning: over-broad grant fs:write:/ gives write access to the whole filesystem"`.
    pub fn render(&self, origin: &str) -> String {
        format!(
            "{origin}:{}: {}: {}",
            self.location, self.severity, self.message
        )
    }
}

/// Checks a policy source and reports all problems, sorted by position.
pub fn check(source: &str, origin: &str) -> Vec<Diagnostic> {
    analyze(source, origin).0
}

/// What the analysis of a source yields: all diagnostics, and the policy as
/// far as it could be understood (valid only if no diagnostic is an error).
pub(crate) fn analyze(source: &str, origin: &str) -> (Vec<Diagnostic>, Policy) {
    let mut analysis = Analysis {
        diagnostics: Vec::new(),
        policy: Policy {
            origin: origin.to_owned(),
            inherit_grants: true,
            ..Policy::default()
        },
        limit_settings: Vec::new(),
    };
    analysis.run(source);
    let Analysis {
        mut diagnostics,
        policy,
        ..
    } = analysis;
    diagnostics.sort_by_key(|d| d.location);
    (diagnostics, policy)
}

struct Analysis {
    diagnostics: Vec<Diagnostic>,
    policy: Policy,
    /// Every place a limit is set, from `limits` or from a limit capability.
    limit_settings: Vec<(LimitField, LimitValue, Location, String)>,
}

impl Analysis {
    fn error(&mut self, location: Location, message: String) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            location,
            message,
        });
    }

    fn warning(&mut self, location: Location, message: String) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            location,
            message,
        });
    }

    fn run(&mut self, source: &str) {
        let root = match yaml::parse(source) {
            Ok(Some(root)) => root,
            Ok(None) => {
                return self.error(
                    Location { line: 1, column: 1 },
                    "policy is empty: expected a mapping with grants and/or limits".to_owned(),
                )
            }
            Err(e) => return self.error(e.location, e.message),
        };
        let NodeKind::Mapping(entries) = &root.kind else {
            return self.error(
                root.location,
                format!(
                    "a policy must be a YAML mapping with keys {}; found {}",
                    TOP_KEYS.join(", "),
                    root.describe()
                ),
            );
        };
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &mut seen) else {
                continue;
            };
            match name {
                "extends" => self.extends(value),
                "grants" => self.grants(value),
                "limits" => self.limits(value),
                "require_signed" => self.require_signed(value),
                "audit" => self.audit(value),
                "isolation" => self.isolation(value),
                other => {
                    let message = unknown_key("top-level key", other, &TOP_KEYS);
                    self.error(key.location, message);
                }
            }
        }
        self.fold_limits();
    }

    /// The text of a mapping key, or `None` (with a diagnostic) if it is not
    /// a scalar or repeats an earlier key.
    fn key_name<'n>(
        &mut self,
        key: &'n Node,
        seen: &mut HashMap<&'n str, Location>,
    ) -> Option<&'n str> {
        let NodeKind::Scalar { text, .. } = &key.kind else {
            self.error(
                key.location,
                format!("mapping keys must be strings; found {}", key.describe()),
            );
            return None;
        };
        if let Some(first) = seen.get(text.as_str()) {
            let message = format!("duplicate key {:?} (first at {first})", excerpt(text));
            self.error(key.location, message);
            return None;
        }
        seen.insert(text, key.location);
        Some(text)
    }

    fn extends(&mut self, value: &Node) {
        match &value.kind {
            _ if value.is_null() => {}
            NodeKind::Scalar { text, .. } if !text.trim().is_empty() => {
                self.policy.extends = Some(text.clone());
                self.policy.extends_location = Some(value.location);
            }
            _ => self.error(
                value.location,
                format!(
                    "extends must be the path of a parent policy; found {}",
                    value.describe()
                ),
            ),
        }
    }

    /// `require_signed: true|false`: whether processors must carry a valid
    /// signature to be added or invoked.
    fn require_signed(&mut self, value: &Node) {
        match &value.kind {
            NodeKind::Scalar { text, plain: true } if text == "true" || text == "false" => {
                self.policy.require_signed = text == "true";
            }
            _ => self.error(
                value.location,
                format!(
                    "require_signed must be true or false; found {}",
                    value.describe()
                ),
            ),
        }
    }

    /// `isolation: jail|strong|wasm`: the boundary the policy's runs need.
    fn isolation(&mut self, value: &Node) {
        match &value.kind {
            NodeKind::Scalar { text, .. } if crate::Isolation::parse(text).is_some() => {
                self.policy.isolation = crate::Isolation::parse(text);
            }
            _ => self.error(
                value.location,
                format!(
                    "isolation must be jail, strong or wasm; found {}",
                    match &value.kind {
                        NodeKind::Scalar { text, .. } if !value.is_null() =>
                            format!("{:?}", excerpt(text)),
                        _ => value.describe().to_owned(),
                    }
                ),
            ),
        }
    }

    /// `audit: required|optional`: whether a run may skip the ledger.
    fn audit(&mut self, value: &Node) {
        match &value.kind {
            NodeKind::Scalar { text, .. } if text == "required" || text == "optional" => {
                self.policy.audit_required = text == "required";
            }
            _ => self.error(
                value.location,
                format!(
                    "audit must be required or optional; found {}",
                    match &value.kind {
                        NodeKind::Scalar { text, .. } if !value.is_null() =>
                            format!("{:?}", excerpt(text)),
                        _ => value.describe().to_owned(),
                    }
                ),
            ),
        }
    }

    fn grants(&mut self, value: &Node) {
        self.policy.inherit_grants = false;
        let items = match &value.kind {
            _ if value.is_null() => return,
            NodeKind::Sequence(items) => items,
            _ => {
                return self.error(
                    value.location,
                    format!(
                        "grants must be a list of capability strings; found {}",
                        value.describe()
                    ),
                )
            }
        };
        if items.len() > MAX_GRANTS {
            return self.error(
                value.location,
                format!("too many grants ({}; at most {MAX_GRANTS})", items.len()),
            );
        }
        let mut grants = Vec::with_capacity(items.len());
        for item in items {
            let text = match &item.kind {
                NodeKind::Scalar { text, .. } => text,
                NodeKind::Mapping(entries) => {
                    let hint = match entries.as_slice() {
                        [(
                            Node {
                                kind: NodeKind::Scalar { text: k, .. },
                                ..
                            },
                            value @ Node {
                                kind: NodeKind::Scalar { text: v, .. },
                                ..
                            },
                        )] => {
                            if value.is_null() {
                                // `- env:`: YAML read a key with no value.
                                format!(" (\"{k}:\" with nothing after it is a YAML key: write the whole capability, e.g. \"{k}:NAME\")")
                            } else {
                                format!(
                                    " (did you mean \"{k}:{v}\"? remove the space after the colon)"
                                )
                            }
                        }
                        _ => String::new(),
                    };
                    self.error(
                        item.location,
                        format!("a grant must be a capability string; found a mapping{hint}"),
                    );
                    continue;
                }
                NodeKind::Sequence(_) => {
                    self.error(
                        item.location,
                        "a grant must be a capability string; found a list".to_owned(),
                    );
                    continue;
                }
            };
            match text.parse::<Capability>() {
                Ok(capability) => grants.push(Grant {
                    capability,
                    location: Some(item.location),
                }),
                Err(e) => self.error(item.location, e.to_string()),
            }
        }
        self.grant_warnings(&grants);
        for grant in grants {
            match LimitField::of_capability(&grant.capability) {
                Some((field, value)) => {
                    let location = grant.location.unwrap_or(value_location_fallback());
                    let source = grant.capability.to_string();
                    self.limit_settings.push((field, value, location, source));
                }
                None => self.policy.grants.push(grant),
            }
        }
    }

    fn limits(&mut self, value: &Node) {
        let entries = match &value.kind {
            _ if value.is_null() => return,
            NodeKind::Mapping(entries) => entries,
            _ => {
                return self.error(
                    value.location,
                    format!(
                        "limits must be a mapping of limit names to values; found {}",
                        value.describe()
                    ),
                )
            }
        };
        let mut seen = HashMap::new();
        for (key, value) in entries {
            let Some(name) = self.key_name(key, &mut seen) else {
                continue;
            };
            let Some(field) = LimitField::from_key(name) else {
                let keys: Vec<&str> = LimitField::ALL.iter().map(|f| f.key()).collect();
                let message = unknown_key("limit", name, &keys);
                self.error(key.location, message);
                continue;
            };
            match &value.kind {
                NodeKind::Scalar { text, .. } if !value.is_null() => match field.parse(text) {
                    Ok(parsed) => {
                        let source = format!("{name}: {text}");
                        self.limit_settings
                            .push((field, parsed, value.location, source));
                    }
                    Err(e) => self.error(value.location, format!("invalid {name} limit: {e}")),
                },
                _ => self.error(
                    value.location,
                    format!(
                        "limit {name} must be a single value; found {}",
                        value.describe()
                    ),
                ),
            }
        }
    }

    /// Folds every limit setting into the policy's limits in document
    /// order; a later setting with a different value is a conflict.
    fn fold_limits(&mut self) {
        let mut settings = std::mem::take(&mut self.limit_settings);
        settings.sort_by_key(|s| s.2);
        let mut first: HashMap<LimitField, (LimitValue, Location, String)> = HashMap::new();
        for (field, value, location, source) in settings {
            // The bounds `warden run` holds limits to: refused here too.
            if let Err(why) = field.check_bounds(value, &format!("limit {}", field.key())) {
                self.error(location, format!("{why} ({source})"));
                continue;
            }
            match first.get(&field) {
                None => {
                    self.policy.limits.set(field, value);
                    self.policy.limit_locations.push((field.key(), location));
                    first.insert(field, (value, location, source));
                }
                Some((earlier, _, _)) if *earlier == value => {}
                Some((_, at, earlier_source)) => {
                    let message = format!(
                        "conflicting {} limit: {source} contradicts {earlier_source} at {at}",
                        field.key()
                    );
                    self.error(location, message);
                }
            }
        }
    }

    /// Warnings about duplicate, shadowed and over-broad grants.
    fn grant_warnings(&mut self, grants: &[Grant]) {
        // Canonical text of each distinct grant -> its first occurrence.
        let mut first: HashMap<String, usize> = HashMap::with_capacity(grants.len());
        for (i, grant) in grants.iter().enumerate() {
            let at = grant.location.unwrap_or(value_location_fallback());
            let text = grant.capability.to_string();
            if let Some(&j) = first.get(&text) {
                let earlier = location_text(grants[j].location);
                self.warning(at, format!("duplicate grant {text} (first at {earlier})"));
                continue;
            }
            first.insert(text.clone(), i);
            if let Some(why) = over_broad(&grant.capability) {
                self.warning(at, format!("over-broad grant {text} {why}"));
            }
        }
        for (i, grant) in grants.iter().enumerate() {
            if grant.capability.is_limit() {
                continue;
            }
            let text = grant.capability.to_string();
            if first.get(&text) != Some(&i) {
                continue; // a duplicate, already reported
            }
            let broader = broader_candidates(&grant.capability)
                .into_iter()
                .find_map(|candidate| {
                    let &j = first.get(&candidate.to_string())?;
                    (j != i && grants[j].capability.subsumes(&grant.capability)).then_some(j)
                });
            if let Some(j) = broader {
                let at = grant.location.unwrap_or(value_location_fallback());
                let message = format!(
                    "grant {text} is redundant: already covered by {} at {}",
                    grants[j].capability,
                    location_text(grants[j].location)
                );
                self.warning(at, message);
            }
        }
    }
}

fn value_location_fallback() -> Location {
    Location { line: 1, column: 1 }
}

fn location_text(location: Option<Location>) -> String {
    location.map_or_else(|| "?".to_owned(), |l| l.to_string())
}

/// Why a grant is over-broad, if it is.
fn over_broad(capability: &Capability) -> Option<String> {
    match capability {
        Capability::FsWrite(p) if p == Path::new("/") => {
            Some("gives write access to the whole filesystem".to_owned())
        }
        Capability::FsRead(p) if p == Path::new("/") => {
            Some("gives read access to the whole filesystem".to_owned())
        }
        Capability::FsWrite(p) if SYSTEM_DIRS.iter().any(|dir| p.starts_with(dir)) => SYSTEM_DIRS
            .iter()
            .find(|dir| p.starts_with(dir))
            .map(|dir| format!("gives write access to system directory {dir}")),
        Capability::FsRead(p) | Capability::FsWrite(p) => {
            SENSITIVE_READS.iter().find_map(|(dir, why)| {
                let dir = Path::new(dir);
                if p.starts_with(dir) {
                    Some((*why).to_owned())
                } else if dir.starts_with(p) {
                    Some(format!("covers {}: {why}", dir.display()))
                } else {
                    None
                }
            })
        }
        Capability::NetConnect {
            host: HostPattern::Any,
            port: PortPattern::Any,
        } => Some("allows connections to any host on any port".to_owned()),
        Capability::NetHttp(HostPattern::Any) => {
            Some("allows HTTP requests to any host".to_owned())
        }
        Capability::NetHttps(HostPattern::Any) => {
            Some("allows HTTPS requests to any host".to_owned())
        }
        Capability::KvWrite(ns) if ns == "*" => {
            Some("allows writing every key-value namespace of the tenant".to_owned())
        }
        _ => None,
    }
}

/// Every capability that could subsume `capability` (including itself),
/// so shadowing is found by lookup rather than by comparing all pairs.
fn broader_candidates(capability: &Capability) -> Vec<Capability> {
    match capability {
        Capability::FsRead(p) | Capability::FsWrite(p) => p
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .flat_map(|a| {
                [
                    Capability::FsWrite(a.to_path_buf()),
                    Capability::FsRead(a.to_path_buf()),
                ]
            })
            .collect(),
        Capability::NetConnect { host, port } => {
            let ports = [*port, PortPattern::Any];
            broader_hosts(host)
                .into_iter()
                .flat_map(|h| {
                    ports.map(|p| Capability::NetConnect {
                        host: h.clone(),
                        port: p,
                    })
                })
                .collect()
        }
        Capability::NetConnectUdp { host, port } => {
            let ports = [*port, PortPattern::Any];
            broader_hosts(host)
                .into_iter()
                .flat_map(|h| {
                    ports.map(|p| Capability::NetConnectUdp {
                        host: h.clone(),
                        port: p,
                    })
                })
                .collect()
        }
        Capability::NetHttp(host) => broader_hosts(host)
            .into_iter()
            .map(Capability::NetHttp)
            .collect(),
        // Also under an http grant of the same or a broader host.
        Capability::NetHttps(host) => broader_hosts(host)
            .into_iter()
            .flat_map(|h| [Capability::NetHttps(h.clone()), Capability::NetHttp(h)])
            .chain(std::iter::once(Capability::NetHttp(host.clone())))
            .collect(),
        Capability::KvRead(ns) | Capability::KvWrite(ns) => [ns.as_str(), "*"]
            .into_iter()
            .flat_map(|n| {
                [
                    Capability::KvWrite(n.to_owned()),
                    Capability::KvRead(n.to_owned()),
                ]
            })
            .collect(),
        other => vec![other.clone()],
    }
}

fn broader_hosts(host: &HostPattern) -> Vec<HostPattern> {
    let mut hosts = vec![host.clone(), HostPattern::Any];
    if let HostPattern::Name(name) | HostPattern::Suffix(name) = host {
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            hosts.push(HostPattern::Suffix(parent.to_owned()));
            rest = parent;
        }
    }
    hosts
}

/// "unknown limit "memroy": did you mean "memory"?" or a list of the keys.
fn unknown_key(what: &str, key: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    match nearest {
        Some((_, k)) => format!("unknown {what} {:?}: did you mean {k:?}?", excerpt(key)),
        None => format!(
            "unknown {what} {:?}: expected one of {}",
            excerpt(key),
            known.join(", ")
        ),
    }
}

/// Levenshtein distance, bounded in cost by the short known keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
