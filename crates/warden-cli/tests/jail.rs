//! Integration and security tests of `warden run` with the jail backend.
//!
//! Every test runs the real `warden` binary as a subprocess, in a temporary
//! directory of its own, and checks the exit status, the program's output
//! and the JSON report. These machines have root and namespaces: nothing here
//! is skipped. Suites: languages, limits, grants, escapes, errors, policy,
//! signals, unprivileged, redteam (attacks from a security review), honest
//! (what the report and stderr say about limits, scratch files, PATH),
//! everyday (ordinary tools run clean, HOME/locale, ptys).

mod common;

#[path = "jail/languages.rs"]
mod languages;

#[path = "jail/limits.rs"]
mod limits;

#[path = "jail/grants.rs"]
mod grants;

#[path = "jail/escapes.rs"]
mod escapes;

#[path = "jail/errors.rs"]
mod errors;

#[path = "jail/policy.rs"]
mod policy;

#[path = "jail/signals.rs"]
mod signals;

#[path = "jail/unprivileged.rs"]
mod unprivileged;

#[path = "jail/redteam.rs"]
mod redteam;

#[path = "jail/everyday.rs"]
mod everyday;

#[path = "jail/honest.rs"]
mod honest;
