//! Static checks that need the whole file: inheritance cycles, rules that
//! can never fire or add nothing, overrides already expired.

use std::collections::HashMap;

use crate::model::{Effect, Rbac, Rule};
use crate::parse::{role_ancestors, Diagnostics};
use crate::time::format_timestamp;

pub(crate) fn lint(rbac: &Rbac, now: i64, diags: &mut Diagnostics<'_>) {
    cycles(rbac, diags);
    let ancestors = role_ancestors(rbac);
    let inherits = |role: &str, of: &str| {
        ancestors
            .get(role)
            .is_some_and(|a| a.iter().any(|r| r == of))
    };
    for rule in &rbac.rules {
        if let (Some(expires), Some(at)) = (rule.expires, rule.expires_at) {
            if expires <= now {
                diags.warning(
                    at,
                    format!(
                        "{} expired at {}: it no longer applies",
                        rule.id(),
                        format_timestamp(expires)
                    ),
                );
            }
        }
    }
    for rule in rbac.rules.iter().filter(|r| r.effect == Effect::Allow) {
        let shadow = rbac.rules.iter().find(|deny| {
            deny.effect == Effect::Deny
                && deny.action == rule.action
                && inherits(&rule.role.name, &deny.role.name)
                && deny.when.is_empty()
                && outlives(deny, rule)
                && patterns_cover(&deny.resources, &rule.resources)
        });
        if let Some(deny) = shadow {
            diags.warning(
                rule.at,
                format!(
                    "{} can never fire: {} at line {} denies {} to role {:?} on {} without conditions",
                    rule.id(),
                    deny.id(),
                    deny.at.line,
                    deny.action,
                    deny.role.name,
                    deny.resources.join(", ")
                ),
            );
            continue;
        }
        let broader = rbac.rules.iter().find(|other| {
            other.index != rule.index
                && other.effect == Effect::Allow
                && other.action == rule.action
                && inherits(&rule.role.name, &other.role.name)
                && other.when.is_empty()
                && outlives(other, rule)
                && (other.cross_tenant || !rule.cross_tenant)
                && ceiling_covers(other, rule)
                && patterns_cover(&other.resources, &rule.resources)
                // Of two rules that cover each other, only the later one is redundant.
                && !(other.index > rule.index && covers_both_ways(other, rule, &inherits))
        });
        if let Some(other) = broader {
            diags.warning(
                rule.at,
                format!(
                    "{} is redundant: {} at line {} already allows {} to role {:?} on {} without conditions",
                    rule.id(),
                    other.id(),
                    other.at.line,
                    other.action,
                    other.role.name,
                    other.resources.join(", ")
                ),
            );
        }
    }
}

/// True if `outer` applies at least as long as `inner`.
fn outlives(outer: &Rule, inner: &Rule) -> bool {
    match (outer.expires, inner.expires) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b <= a,
    }
}

/// True if every request within `inner`'s ceiling is within `outer`'s.
fn ceiling_covers(outer: &Rule, inner: &Rule) -> bool {
    match (&outer.ceiling, &inner.ceiling) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(outer), Some(inner)) => inner.iter().all(|c| outer.iter().any(|o| o.subsumes(c))),
    }
}

fn covers_both_ways(a: &Rule, b: &Rule, inherits: &dyn Fn(&str, &str) -> bool) -> bool {
    inherits(&a.role.name, &b.role.name)
        && b.when.is_empty()
        && outlives(b, a)
        && (b.cross_tenant || !a.cross_tenant)
        && ceiling_covers(b, a)
        && patterns_cover(&b.resources, &a.resources)
}

/// True if every name matched by some pattern of `inner` is matched by a
/// pattern of `outer`. Conservative: false when unsure.
fn patterns_cover(outer: &[String], inner: &[String]) -> bool {
    inner
        .iter()
        .all(|i| outer.iter().any(|o| pattern_covers(o, i)))
}

fn pattern_covers(outer: &str, inner: &str) -> bool {
    if outer == inner || outer == "*" {
        return true;
    }
    if !inner.contains('*') {
        return glob_match(outer, inner);
    }
    let stars = outer.matches('*').count();
    // The inner pattern's literal head (before its first `*`) and tail
    // (after its last) are in every name it matches.
    let head = &inner[..inner.find('*').unwrap_or(inner.len())];
    let tail = &inner[inner.rfind('*').map_or(0, |i| i + 1)..];
    match stars {
        1 if outer.ends_with('*') => head.starts_with(&outer[..outer.len() - 1]),
        1 if outer.starts_with('*') => tail.ends_with(&outer[1..]),
        _ => false,
    }
}

/// Cedar `like` semantics: `*` matches any run of characters.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ni = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Reports each back edge of the inheritance graph, at the `inherits` entry.
fn cycles(rbac: &Rbac, diags: &mut Diagnostics<'_>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index: HashMap<&str, usize> = rbac
        .roles
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut marks = vec![Mark::New; rbac.roles.len()];
    for start in 0..rbac.roles.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // (role, next inherits entry to visit); the stack is the open path.
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Open;
        while let Some(&mut (role, ref mut next)) = stack.last_mut() {
            let Some(edge) = rbac.roles[role].inherits.get(*next) else {
                marks[role] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            let Some(&target) = index.get(edge.name.as_str()) else {
                continue;
            };
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::Open;
                    stack.push((target, 0));
                }
                Mark::Open => {
                    let from = stack.iter().position(|(r, _)| *r == target).unwrap_or(0);
                    let mut path: Vec<&str> = stack[from..]
                        .iter()
                        .map(|(r, _)| rbac.roles[*r].name.as_str())
                        .collect();
                    path.push(&rbac.roles[target].name);
                    diags.error(
                        edge.at,
                        format!("inheritance cycle: {}", path.join(" inherits ")),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("parser*", "parser-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("db-*", "db-"));
        assert!(!glob_match("db-*", "db"));
    }

    #[test]
    fn pattern_coverage() {
        assert!(pattern_covers("*", "x*"));
        assert!(pattern_covers("parser*", "parser-v2*"));
        assert!(!pattern_covers("parser-v2*", "parser*"));
        assert!(pattern_covers("*-prod", "db*-prod"));
        assert!(pattern_covers("p*", "parser"));
        assert!(!pattern_covers("pa*r", "pa*"));
    }
}
