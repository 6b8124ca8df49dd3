//! Capability ceilings in Cedar, which has no quantifiers and cannot call
//! [`Capability::subsumes`].
//!
//! "Every requested capability is covered by some ceiling entry" is
//! encoded with *covering keys*: for a requested capability `c`,
//! `covering_keys(c)` is the set of canonical strings of every capability
//! that subsumes `c` (its ancestors paths, wider host wildcards, `*` ports,
//! `write` for `read`). It depends on the request alone, never on the
//! policy, and `e.subsumes(c)` ⇔ `covering_keys(c)` contains `e`'s
//! canonical form (tested exhaustively on generated cases). Each requested
//! capability gets one context slot `context.caps.cN` holding its keys
//! (`context.caps_count` of them are in use), and a rule with ceiling `E`
//! requires `E.containsAny(cN)` of each slot in use, nested so that Cedar
//! stops after the last one. Limits (`mem:limit` …) are covered by any larger
//! limit, an infinite set, so they are compared as numbers instead.

use std::path::Path;

use warden_policy::{Capability, HostPattern, PortPattern};

/// Context slots for requested capabilities (after reduction).
pub const CAPABILITY_SLOTS: usize = 16;

/// The limit kinds, as named in `context.limits`.
pub(crate) const LIMIT_FIELDS: [&str; 4] = ["mem_bytes", "cpu_percent", "time_ns", "procs"];

/// A request's capabilities as the Cedar context carries them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CapabilityContext {
    /// Covering keys, one entry per slot in use.
    pub slots: Vec<Vec<String>>,
    /// More distinct capabilities than slots, or a limit beyond i64.
    pub overflow: bool,
    /// Largest requested value per [`LIMIT_FIELDS`] entry; -1 if none.
    pub limits: [i64; 4],
}

/// Canonical strings of the capabilities that subsume `cap` (not for limits).
pub fn covering_keys(cap: &Capability) -> Vec<String> {
    let mut keys = Vec::new();
    match cap {
        Capability::FsRead(path) => {
            for ancestor in ancestors(path) {
                keys.push(format!("fs:read:{ancestor}"));
                keys.push(format!("fs:write:{ancestor}"));
            }
        }
        Capability::FsWrite(path) => {
            for ancestor in ancestors(path) {
                keys.push(format!("fs:write:{ancestor}"));
            }
        }
        Capability::NetHttp(host) => {
            for h in host_keys(host) {
                keys.push(format!("net:http:{h}"));
            }
        }
        // Within a ceiling of net:https or of net:http (which covers it).
        Capability::NetHttps(host) => {
            for h in host_keys(host) {
                keys.push(format!("net:https:{h}"));
                keys.push(format!("net:http:{h}"));
            }
        }
        Capability::NetConnect { host, port } | Capability::NetConnectUdp { host, port } => {
            let ports: &[PortPattern] = match port {
                PortPattern::Port(_) => &[*port, PortPattern::Any],
                PortPattern::Any => &[PortPattern::Any],
            };
            let kind = match cap {
                Capability::NetConnectUdp { .. } => "net:connect:udp",
                _ => "net:connect",
            };
            for h in host_keys(host) {
                for p in ports {
                    keys.push(format!("{kind}:{h}:{p}"));
                }
            }
        }
        Capability::KvRead(ns) => {
            for access in ["read", "write"] {
                keys.push(format!("kv:{access}:{ns}"));
                if ns != "*" {
                    keys.push(format!("kv:{access}:*"));
                }
            }
        }
        Capability::KvWrite(ns) => {
            keys.push(format!("kv:write:{ns}"));
            if ns != "*" {
                keys.push("kv:write:*".to_owned());
            }
        }
        other => keys.push(other.to_string()),
    }
    keys
}

/// The path and each of its ancestors, as displayed (`/a/b`, `/a`, `/`).
fn ancestors(path: &Path) -> Vec<String> {
    path.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .map(|a| a.display().to_string())
        .collect()
}

/// The host patterns covering `host`, displayed.
fn host_keys(host: &HostPattern) -> Vec<String> {
    let mut keys = Vec::new();
    let suffixes = |name: &str, keys: &mut Vec<String>| {
        for (i, _) in name.match_indices('.') {
            keys.push(HostPattern::Suffix(name[i + 1..].to_owned()).to_string());
        }
    };
    match host {
        HostPattern::Any => {}
        HostPattern::Name(name) => {
            keys.push(host.to_string());
            suffixes(name, &mut keys);
        }
        HostPattern::Suffix(suffix) => {
            keys.push(host.to_string());
            suffixes(suffix, &mut keys);
        }
        HostPattern::Ip(_) => keys.push(host.to_string()),
    }
    keys.push(HostPattern::Any.to_string());
    keys
}

/// The limit slot and amount of a limit capability.
pub(crate) fn limit_amount(cap: &Capability) -> Option<(usize, u128)> {
    match cap {
        Capability::MemLimit(b) => Some((0, u128::from(*b))),
        Capability::CpuLimit(p) => Some((1, u128::from(*p))),
        Capability::TimeLimit(d) => Some((2, d.as_nanos())),
        Capability::ProcLimit(n) => Some((3, u128::from(*n))),
        _ => None,
    }
}

/// Builds the context of `requested`: drops duplicates and capabilities
/// that another requested capability subsumes (keeping the first of
/// equals), then fills the slots.
pub(crate) fn capability_context(requested: &[Capability]) -> CapabilityContext {
    let mut context = CapabilityContext {
        limits: [-1; 4],
        ..CapabilityContext::default()
    };
    // (canonical text, covering keys) of the capabilities kept so far.
    let mut kept: Vec<(String, Vec<String>)> = Vec::new();
    for cap in requested {
        if let Some((slot, amount)) = limit_amount(cap) {
            match i64::try_from(amount) {
                Ok(amount) => context.limits[slot] = context.limits[slot].max(amount),
                Err(_) => context.overflow = true,
            }
            continue;
        }
        let text = cap.to_string();
        let keys = covering_keys(cap);
        // `a` subsumes `b` exactly when b's covering keys contain a's text.
        if kept.iter().any(|(t, _)| keys.contains(t)) {
            continue;
        }
        kept.retain(|(_, k)| !k.contains(&text));
        kept.push((text, keys));
    }
    if kept.len() > CAPABILITY_SLOTS {
        context.overflow = true;
    }
    context.slots = kept.into_iter().map(|(_, keys)| keys).collect();
    context
}

/// The Cedar condition that the request's capabilities are within `ceiling`.
pub(crate) fn ceiling_condition(ceiling: &[Capability]) -> String {
    let mut entries: Vec<String> = ceiling
        .iter()
        .filter(|c| limit_amount(c).is_none())
        .map(|c| crate::compile::cedar_string(&c.to_string()))
        .collect();
    entries.sort();
    entries.dedup();
    let set = format!("[{}]", entries.join(", "));
    let mut clauses = vec!["!context.caps_overflow".to_owned()];
    // Slot by slot, innermost last: `count <= N || (SET covers cN && …)`,
    // so a request with k capabilities costs k set tests, not 16.
    clauses.push(if entries.is_empty() {
        "context.caps_count == 0".to_owned()
    } else {
        let mut nested = String::from("true");
        for slot in (0..CAPABILITY_SLOTS).rev() {
            nested = format!(
                "(context.caps_count <= {slot} || ({set}.containsAny(context.caps.c{slot}) && {nested}))"
            );
        }
        nested
    });
    let mut max = [None::<i64>; 4];
    for cap in ceiling {
        if let Some((slot, amount)) = limit_amount(cap) {
            let amount = i64::try_from(amount).unwrap_or(i64::MAX);
            max[slot] = Some(max[slot].map_or(amount, |m: i64| m.max(amount)));
        }
    }
    for (slot, field) in LIMIT_FIELDS.iter().enumerate() {
        clauses.push(match max[slot] {
            Some(m) => format!("context.limits.{field} <= {m}"),
            None => format!("context.limits.{field} < 0"),
        });
    }
    clauses.join(" &&\n    ")
}

/// True if every capability of `requested` is subsumed by one of `ceiling`
/// (the meaning the Cedar encoding must have).
pub fn within_ceiling(requested: &[Capability], ceiling: &[Capability]) -> bool {
    requested
        .iter()
        .all(|r| ceiling.iter().any(|c| c.subsumes(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(s: &str) -> Capability {
        s.parse().unwrap()
    }

    #[test]
    fn keys_of_paths_and_hosts() {
        assert_eq!(
            covering_keys(&cap("fs:read:/data/x")),
            [
                "fs:read:/data/x",
                "fs:write:/data/x",
                "fs:read:/data",
                "fs:write:/data",
                "fs:read:/",
                "fs:write:/"
            ]
        );
        assert_eq!(
            covering_keys(&cap("net:http:api.example.com")),
            [
                "net:http:api.example.com",
                "net:http:*.example.com",
                "net:http:*.com",
                "net:http:*"
            ]
        );
        assert_eq!(
            covering_keys(&cap("net:connect:[::1]:443")),
            [
                "net:connect:[::1]:443",
                "net:connect:[::1]:*",
                "net:connect:*:443",
                "net:connect:*:*"
            ]
        );
    }

    #[test]
    fn reduction_drops_subsumed() {
        let ctx = capability_context(&[
            cap("fs:read:/data/x"),
            cap("fs:read:/data"),
            cap("fs:read:/data"),
            cap("mem:limit:64MiB"),
            cap("mem:limit:128MiB"),
        ]);
        assert_eq!(ctx.slots.len(), 1);
        assert_eq!(ctx.slots[0][0], "fs:read:/data");
        assert_eq!(ctx.limits, [128 << 20, -1, -1, -1]);
        assert!(!ctx.overflow);
    }
}
