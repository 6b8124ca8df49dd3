//! Warden's capability model: capability strings, YAML policies, attenuation
//! and static checks.
//!
//! Everything here is pure: strings in, typed values out, no I/O. Every
//! function returns an error rather than panicking, whatever the input, and
//! hostile policy sources (huge, deeply nested, alias bombs) are refused
//! quickly with bounded memory.
//!
//! ```
//! use warden_policy::{parse_policy, Capability};
//!
//! let policy = parse_policy("grants:\n  - fs:write:/srv/out\nlimits:\n  memory: 256MiB\n", "policy.yaml").unwrap();
//! let wanted: Capability = "fs:read:/srv/out/today".parse().unwrap();
//! assert!(policy.permits(&wanted));
//! assert_eq!(policy.limits.memory, Some(256 << 20));
//! ```
#![forbid(unsafe_code)]

mod capability;
mod check;
mod limits;
mod policy;
mod value;
mod yaml;

pub use capability::{
    normalize, Capability, CapabilityError, HostPattern, MalformedReason, NetLimit, PortPattern,
    MAX_CAPABILITY_LEN,
};
pub use check::{check, Diagnostic, Severity, MAX_GRANTS};
pub use limits::{bounds, LimitField, LimitValue, Limits};
pub use policy::{parse_policy, Grant, Isolation, Location, Policy, PolicyError};
pub use value::{
    format_duration, format_size, parse_count, parse_duration, parse_percent, parse_size,
    ValueError, MAX_CPU_PERCENT,
};
pub use yaml::{
    parse as parse_yaml, Node as YamlNode, NodeKind as YamlNodeKind, YamlError, MAX_DEPTH,
    MAX_NODES, MAX_SOURCE_BYTES,
};

#[cfg(test)]
mod tests;

/// One fuzzing step: feeds `data` (as lossy UTF-8) to [`parse_policy`],
/// [`check`] and [`Capability::from_str`](std::str::FromStr), and to the
/// size and duration parsers, and checks their invariants.
///
/// Used by the `policy_parse` cargo-fuzz target and by a unit test.
///
/// # Panics
///
/// Only if an invariant is broken, which is a bug in this crate: a parsed
/// capability or value does not round-trip through its display form,
/// `parse_policy` and `check` disagree on whether the source is valid, a
/// capability does not subsume itself, or a valid policy is not a narrowing
/// of itself.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    let parsed = parse_policy(&text, "fuzz.yaml");
    let diagnostics = check(&text, "fuzz.yaml");
    let has_error = diagnostics.iter().any(|d| d.severity == Severity::Error);
    assert_eq!(
        parsed.is_err(),
        has_error,
        "parse_policy and check disagree on {text:?}"
    );
    for d in &diagnostics {
        assert!(!d.render("f").contains('\n'), "multi-line diagnostic {d:?}");
        assert!(
            d.location.line >= 1 && d.location.column >= 1,
            "bad location {d:?}"
        );
    }
    match parsed {
        Ok(policy) => {
            assert_eq!(policy.digest(), policy.clone().digest());
            let narrowed = Policy::attenuate(&policy, &policy);
            assert!(
                narrowed.is_ok(),
                "a policy must narrow itself: {narrowed:?}"
            );
            let requested: Vec<Capability> =
                policy.grants.iter().map(|g| g.capability.clone()).collect();
            assert!(policy.allow_request(&requested, &policy.limits).is_ok());
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error {e}"),
    }

    for candidate in std::iter::once(text.as_ref()).chain(text.lines()) {
        fuzz_capability(candidate);
        if let Ok(n) = parse_size(candidate) {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        if let Ok(d) = parse_duration(candidate) {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}

fn fuzz_capability(candidate: &str) {
    if let Ok(capability) = candidate.parse::<Capability>() {
        let shown = capability.to_string();
        assert_eq!(
            shown.parse::<Capability>().as_ref(),
            Ok(&capability),
            "{candidate:?} -> {shown:?}"
        );
        assert!(
            capability.subsumes(&capability),
            "{shown} must subsume itself"
        );
        let based = capability.clone().with_base(std::path::Path::new("/base"));
        if let Some(path) = based.path() {
            assert!(
                path.is_absolute(),
                "{shown} with base gives {}",
                path.display()
            );
        }
    }
}
