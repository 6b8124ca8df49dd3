//! From a run request (CLI flags or, later, an HTTP body) to a fully
//! resolved [`Invocation`].

use std::fs;
use std::path::{Path, PathBuf};

use warden_core::{valid_tenant, EffectiveLimits, Invocation, ModuleRef, DEFAULT_TENANT};
use warden_policy::{Capability, Grant, Limits, Policy};

use crate::{load_policy, route, EngineError};

/// What the caller asked for, unresolved.
#[derive(Debug, Default, Clone)]
pub struct RunRequest {
    pub argv: Vec<String>,
    pub policy: Option<PathBuf>,
    /// Capability strings from `--allow`.
    pub allow: Vec<String>,
    /// `--env NAME` or `--env NAME=VALUE`.
    pub env: Vec<String>,
    /// Limits from flags.
    pub limits: Limits,
    pub workdir: Option<PathBuf>,
    pub backend: Option<String>,
    /// `--fuel N` (WASM only).
    pub fuel: Option<u64>,
    /// `--deterministic` (WASM only).
    pub deterministic: bool,
    /// `--tenant NAME`: whose key-value store the run uses (default
    /// `default`).
    pub tenant: Option<String>,
    /// `--module NAME=PATH` (WASM only): modules the run may call by name
    /// (with `module:call:NAME`).
    pub modules: Vec<String>,
    /// Literal strings to replace by `[REDACTED]` in what the run logs.
    pub redact: Vec<String>,
    /// The caller's environment, where `--env NAME` and `env:NAME` grants
    /// take their values.
    pub caller_env: Vec<(String, String)>,
    /// The caller's working directory (relative paths resolve against it).
    pub cwd: PathBuf,
}

/// A request resolved against its policy, ready for [`crate::Engine::run`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub invocation: Invocation,
    pub backend: String,
    /// Effective grants as capability strings, for the report.
    pub capabilities: Vec<String>,
    pub policy_digest: String,
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn fill(limits: &Limits) -> EffectiveLimits {
    let d = EffectiveLimits::default();
    EffectiveLimits {
        memory_bytes: limits.memory.unwrap_or(d.memory_bytes),
        cpu_time: limits.cpu_time.or(d.cpu_time),
        wall_time: limits.wall_time.unwrap_or(d.wall_time),
        pids: limits.pids.unwrap_or(d.pids),
        cpu_percent: limits.cpu_percent.or(d.cpu_percent),
        output_bytes: limits.output.unwrap_or(d.output_bytes),
        file_size_bytes: limits.file_size.unwrap_or(d.file_size_bytes),
        open_files: limits.open_files.unwrap_or(d.open_files),
        tmpfs_bytes: limits.tmpfs.unwrap_or(d.tmpfs_bytes),
    }
}

/// Interpreters whose first non-option argument is the script they run.
const INTERPRETERS: &[&str] = &[
    "python", "python3", "node", "nodejs", "php", "sh", "bash", "dash", "ruby", "perl",
];

/// The entry the user named — a relative program path (`./tool`), or the
/// script a known interpreter is given as its first non-option argument
/// (`python3 job.py`) — when it is a regular file inside the working
/// directory. It is mounted read-only so that such commands work without
/// granting the whole directory; the report lists it among the
/// capabilities. Under a policy it is granted only if the policy allows
/// reading it.
fn entry_file(argv: &[String], cwd: &Path) -> Option<PathBuf> {
    let program = argv.first()?;
    let candidate = if program.contains('/') {
        program.as_str()
    } else if INTERPRETERS.contains(&program.as_str()) {
        argv.iter().skip(1).find(|a| !a.starts_with('-'))?.as_str()
    } else {
        return None;
    };
    let path = Path::new(candidate);
    if path.is_absolute() {
        return None;
    }
    let canonical = fs::canonicalize(cwd.join(path)).ok()?;
    let cwd = fs::canonicalize(cwd).ok()?;
    (canonical.starts_with(&cwd) && fs::metadata(&canonical).ok()?.is_file()).then_some(canonical)
}

/// Parses `--module NAME=PATH` values: a name callers use with
/// `module:call:NAME`, and an existing module file (relative to `cwd`).
fn callable_modules(specs: &[String], cwd: &Path) -> Result<Vec<ModuleRef>, EngineError> {
    let mut modules: Vec<ModuleRef> = Vec::new();
    for spec in specs {
        let bad = |why: String| EngineError::Request(format!("--module {spec}: {why}"));
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=PATH".into()))?;
        match format!("module:call:{name}").parse::<Capability>() {
            Ok(Capability::ModuleCall(_)) => {}
            Ok(_) => return Err(bad(format!("invalid module name {name:?}"))),
            Err(e) => return Err(bad(e.to_string())),
        }
        if modules.iter().any(|m| m.name == name) {
            return Err(bad(format!("module {name} is given twice")));
        }
        let path = fs::canonicalize(cwd.join(path)).map_err(|e| bad(format!("{path}: {e}")))?;
        if !path.is_file() {
            return Err(bad(format!("{}: not a file", path.display())));
        }
        modules.push(ModuleRef {
            name: name.to_string(),
            path,
            grants: None,
        });
    }
    Ok(modules)
}

/// Resolves a request: parses grants, intersects them with the policy,
/// fills limits, collects the environment and the working directory.
pub fn prepare(req: &RunRequest, invocation_id: String) -> Result<Prepared, EngineError> {
    if req.argv.is_empty() {
        return Err(EngineError::Request(
            "no command given (usage: warden run [OPTIONS] -- PROGRAM [ARGS...])".into(),
        ));
    }
    let backend = route(req.backend.as_deref(), &req.argv)?;
    if backend == "jail" && (req.fuel.is_some() || req.deterministic) {
        return Err(EngineError::Request(
            "--fuel and --deterministic apply to WebAssembly modules only (backend wasm)".into(),
        ));
    }
    if backend == "jail" && req.tenant.is_some() {
        return Err(EngineError::Request(
            "--tenant applies to WebAssembly modules only (backend wasm): the key-value store is a WASM host capability".into(),
        ));
    }
    if backend == "jail" && !req.modules.is_empty() {
        return Err(EngineError::Request(
            "--module applies to WebAssembly modules only (backend wasm)".into(),
        ));
    }
    let tenant = req
        .tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_TENANT.to_string());
    if !valid_tenant(&tenant) {
        return Err(EngineError::Request(format!(
            "--tenant {tenant:?}: expected 1-64 ASCII letters, digits, '_', '-' or '.', not starting with '-' or '.'"
        )));
    }
    let modules = callable_modules(&req.modules, &req.cwd)?;
    let mut requested: Vec<Capability> = Vec::new();
    let mut limits = req.limits.clone();
    for text in &req.allow {
        let cap: Capability = text
            .parse()
            .map_err(|e| EngineError::Request(format!("--allow {text}: {e}")))?;
        match cap {
            Capability::MemLimit(b) => limits.memory = Some(b),
            Capability::CpuLimit(p) => limits.cpu_percent = Some(p),
            Capability::TimeLimit(d) => limits.wall_time = Some(d),
            Capability::ProcLimit(n) => limits.pids = Some(n),
            other => requested.push(other.with_base(&req.cwd)),
        }
    }
    // Values by name, in first-given order; the index keeps many --env
    // flags linear (a search per flag made 40k of them take 12 s).
    let mut env_values: Vec<(String, String)> = Vec::new();
    let mut env_index: std::collections::HashMap<String, usize> = Default::default();
    for item in &req.env {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (item.clone(), None),
        };
        if !env_name_ok(&name) {
            return Err(EngineError::Request(format!(
                "--env {item}: invalid variable name {name:?}"
            )));
        }
        let value = match value {
            Some(v) => v,
            None => req
                .caller_env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    EngineError::Request(format!("--env {name}: not set in warden's environment"))
                })?,
        };
        match env_index.get(&name) {
            // The last value given wins.
            Some(&i) => env_values[i].1 = value,
            None => {
                requested.push(Capability::Env(name.clone()));
                env_index.insert(name.clone(), env_values.len());
                env_values.push((name, value));
            }
        }
    }

    let mut ceiling: Option<Policy> = None;
    let (grants, limits, policy_digest) = match &req.policy {
        Some(path) => {
            let policy = load_policy(&req.cwd.join(path))?;
            let grants = if requested.is_empty() {
                policy.grants.iter().map(|g| g.capability.clone()).collect()
            } else {
                policy.allow_request(&requested, &limits)?
            };
            let exceeding = limits.exceeding(&policy.limits);
            if !exceeding.is_empty() {
                return Err(EngineError::Request(format!(
                    "requested limits exceed policy {}: {}",
                    path.display(),
                    exceeding.join(", ")
                )));
            }
            let limits = limits.or(&policy.limits);
            let digest = policy.digest();
            ceiling = Some(policy);
            (grants, limits, digest)
        }
        None => {
            let policy = Policy {
                grants: requested.iter().cloned().map(Grant::from).collect(),
                limits: limits.clone(),
                origin: "command line".into(),
                ..Policy::default()
            };
            (requested, limits, policy.digest())
        }
    };
    // Granted variables not given a value on the command line take the caller's.
    for cap in &grants {
        if let Capability::Env(name) = cap {
            if !env_index.contains_key(name) {
                if let Some((_, v)) = req.caller_env.iter().find(|(k, _)| k == name) {
                    env_index.insert(name.clone(), env_values.len());
                    env_values.push((name.clone(), v.clone()));
                }
            }
        }
    }
    // The same bounds `policy check` holds policies to (the defaults meet
    // them).
    limits.check_bounds().map_err(EngineError::Request)?;
    let effective = fill(&limits);

    let workdir = match &req.workdir {
        Some(dir) => fs::canonicalize(req.cwd.join(dir))
            .map_err(|e| EngineError::Request(format!("--workdir {}: {e}", dir.display())))?,
        None => fs::canonicalize(&req.cwd).unwrap_or_else(|_| PathBuf::from("/")),
    };
    let mut capabilities = grants;
    // The module a WASM run executes is read by Warden itself, not
    // granted to the guest; and it is fixed against the caller's
    // directory, so --workdir cannot change which module runs.
    let mut argv = req.argv.clone();
    if backend == "wasm" {
        if let Some(module) = argv.first_mut() {
            *module = req.cwd.join(&*module).display().to_string();
        }
    }
    let entry = if backend == "jail" {
        entry_file(&req.argv, &req.cwd)
    } else {
        None
    };
    if let Some(entry) = entry {
        let entry = Capability::FsRead(entry);
        let allowed = ceiling.as_ref().is_none_or(|p| p.permits(&entry));
        if allowed && !capabilities.iter().any(|c| c.subsumes(&entry)) {
            capabilities.push(entry);
        }
    }
    Ok(Prepared {
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        invocation: Invocation {
            invocation_id,
            argv,
            env: env_values,
            workdir,
            capabilities,
            limits: effective,
            fuel: req.fuel,
            deterministic: req.deterministic,
            deterministic_seed: None,
            tenant,
            redact: req.redact.clone(),
            modules,
        },
        backend,
        policy_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callable_modules_and_tenants_are_checked() {
        let dir =
            std::env::temp_dir().join(format!("warden-engine-modules-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let req = |modules: &[&str], tenant: Option<&str>, program: &str| RunRequest {
            argv: vec![program.to_string()],
            modules: modules.iter().map(|s| s.to_string()).collect(),
            tenant: tenant.map(str::to_string),
            cwd: dir.clone(),
            ..RunRequest::default()
        };
        let id = || "0".repeat(32);
        let p = prepare(&req(&["parser=m.wasm"], Some("acme"), "main.wasm"), id()).unwrap();
        assert_eq!(p.invocation.tenant, "acme");
        assert_eq!(p.invocation.modules.len(), 1);
        assert_eq!(p.invocation.modules[0].name, "parser");
        assert_eq!(
            p.invocation.modules[0].path,
            fs::canonicalize(dir.join("m.wasm")).unwrap()
        );
        assert_eq!(p.invocation.modules[0].grants, None);
        let p = prepare(&req(&[], None, "main.wasm"), id()).unwrap();
        assert_eq!(p.invocation.tenant, "default");

        for bad in [
            &["parser"][..],
            &["../x=m.wasm"],
            &["p=missing.wasm"],
            &["p=m.wasm", "p=m.wasm"],
        ] {
            let err = prepare(&req(bad, None, "main.wasm"), id()).unwrap_err();
            assert!(err.to_string().starts_with("--module "), "{bad:?}: {err}");
        }
        for bad in ["../x", "", ".hidden", "a/b"] {
            let err = prepare(&req(&[], Some(bad), "main.wasm"), id()).unwrap_err();
            assert!(err.to_string().contains("--tenant"), "{bad:?}: {err}");
        }
        // --module is for WebAssembly runs only.
        let err = prepare(&req(&["p=m.wasm"], None, "python3"), id()).unwrap_err();
        assert!(err.to_string().contains("WebAssembly"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
