//! From a run request (CLI flags or, later, an HTTP body) to a fully
//! resolved [`Invocation`].

use std::fs;
use std::path::{Path, PathBuf};

use warden_core::{valid_tenant, EffectiveLimits, Invocation, ModuleRef, View, DEFAULT_TENANT};
use warden_policy::{Capability, Grant, Limits, Policy};

use crate::{load_policy, EngineError};

/// Whether `dir` is absolute, has no `.` or `..`, and is at or under the
/// inside path of one of the request's `--at` views.
fn inside_a_view(dir: &Path, at: &[(usize, PathBuf)]) -> bool {
    use std::path::Component;
    dir.is_absolute()
        && dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && at.iter().any(|(_, inside)| dir.starts_with(inside))
}

/// What the caller asked for, unresolved.
#[derive(Debug, Default, Clone)]
pub struct RunRequest {
    pub argv: Vec<String>,
    pub policy: Option<PathBuf>,
    /// Capability strings from `--allow`.
    pub allow: Vec<String>,
    /// `--at PATH` after an `--allow fs:…`: the index of that `--allow`,
    /// and where the program sees the granted path instead of its own.
    pub at: Vec<(usize, PathBuf)>,
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
    /// Grant exactly what `allow` requests, also when that is nothing
    /// (a processor gets what its manifest asks for, never all of the
    /// policy); otherwise an empty request under a policy gets the
    /// policy's grants.
    pub exact_grants: bool,
}

/// A request resolved against its policy, ready for [`crate::Engine::run`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub invocation: Invocation,
    pub backend: String,
    /// The rule that chose [`Prepared::backend`] (see
    /// [`crate::route_with_rule`]).
    pub routing: String,
    /// Effective grants as capability strings, for the report.
    pub capabilities: Vec<String>,
    pub policy_digest: String,
    /// What the run will do differently from what was asked (another
    /// program than the caller's PATH names): for the report's warnings
    /// and the caller's terminal.
    pub notices: Vec<String>,
    /// The policy in force says `audit: required`.
    pub audit_required: bool,
    /// The policy in force says `require_signed: true`.
    pub require_signed: bool,
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
        net_bytes: limits.net_bytes.or(d.net_bytes),
        net_connections: limits.net_connections.unwrap_or(d.net_connections),
        net_idle: limits.net_idle.or(d.net_idle),
    }
}

/// How an interpreter's command line names its script: options that take
/// the program inline (so there is no script file), options that take a
/// value (skipped with it), and an option whose value is the script.
struct ScriptArgs {
    inline: &'static [&'static str],
    with_value: &'static [&'static str],
    script: &'static [&'static str],
}

const PYTHON: ScriptArgs = ScriptArgs {
    inline: &["-c", "-m"],
    with_value: &["-W", "-X", "--check-hash-based-pycs"],
    script: &[],
};
const SHELL: ScriptArgs = ScriptArgs {
    inline: &["-c"],
    with_value: &["-o", "+o", "-O", "+O", "--rcfile", "--init-file"],
    script: &[],
};
const NODE: ScriptArgs = ScriptArgs {
    inline: &["-e", "--eval", "-p", "--print"],
    with_value: &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--input-type",
        "--conditions",
        "-C",
    ],
    script: &[],
};
const PHP: ScriptArgs = ScriptArgs {
    inline: &["-r", "-B", "-R", "-F", "-E", "-a"],
    with_value: &["-c", "-d", "-z"],
    script: &["-f"],
};
const PERL: ScriptArgs = ScriptArgs {
    inline: &["-e", "-E"],
    with_value: &["-I", "-M", "-m"],
    script: &[],
};
const RUBY: ScriptArgs = ScriptArgs {
    inline: &["-e"],
    with_value: &["-I", "-r", "-C", "-E"],
    script: &[],
};

/// Interpreters whose first non-option argument is the script they run,
/// by the name they are installed under (a version may follow:
/// `python3.11`, `php8.2`, `perl5.36`).
const INTERPRETERS: &[(&str, &ScriptArgs)] = &[
    ("python", &PYTHON),
    ("nodejs", &NODE),
    ("node", &NODE),
    ("php", &PHP),
    ("bash", &SHELL),
    ("dash", &SHELL),
    ("zsh", &SHELL),
    ("ksh", &SHELL),
    ("sh", &SHELL),
    ("ruby", &RUBY),
    ("perl", &PERL),
];

/// The interpreter `program` is (named by a path or a versioned name), if
/// it is one Warden knows.
fn interpreter(program: &str) -> Option<&'static ScriptArgs> {
    let base = program.rsplit('/').next()?;
    INTERPRETERS.iter().find_map(|(name, args)| {
        let version = base.strip_prefix(name)?;
        version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
            .then_some(*args)
    })
}

/// The script an interpreter's arguments name, if they name a file.
fn script_arg<'a>(args: &'a [String], syntax: &ScriptArgs) -> Option<&'a str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let a = arg.as_str();
        if a == "--" {
            return args.next().map(String::as_str);
        }
        if syntax.inline.contains(&a) || a == "-" {
            return None;
        }
        if syntax.script.contains(&a) {
            return args.next().map(String::as_str);
        }
        if syntax.with_value.contains(&a) {
            args.next();
            continue;
        }
        if !a.starts_with('-') && !a.starts_with('+') {
            return Some(a);
        }
    }
    None
}

/// The entries the user named — a relative program path (`./tool`), and
/// the script an interpreter (by any path or versioned name) is given
/// (`python3 job.py`, `/usr/bin/python3.11 job.py`) — that are regular
/// files inside the working directory. They are mounted read-only so that
/// such commands work without granting the whole directory; the report
/// lists them among the capabilities. Under a policy each is granted only
/// if the policy allows reading it.
fn entry_files(argv: &[String], cwd: &Path) -> Vec<PathBuf> {
    let Some(program) = argv.first() else {
        return Vec::new();
    };
    let mut named: Vec<&str> = Vec::new();
    if program.contains('/') {
        named.push(program);
    }
    if let Some(script) = interpreter(program).and_then(|s| script_arg(&argv[1..], s)) {
        named.push(script);
    }
    let Ok(cwd) = fs::canonicalize(cwd) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for candidate in named {
        let Ok(canonical) = fs::canonicalize(cwd.join(candidate)) else {
            continue;
        };
        let is_file = fs::metadata(&canonical).is_ok_and(|m| m.is_file());
        if is_file && canonical.starts_with(&cwd) && !entries.contains(&canonical) {
            entries.push(canonical);
        }
    }
    entries
}

/// The first executable file named `program` on `path` (`:`-separated; an
/// empty entry is `cwd`) that `usable` accepts.
fn find_on_path(
    program: &str,
    path: &str,
    cwd: &Path,
    usable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { cwd } else { Path::new(dir) };
        let candidate = dir.join(program);
        let meta = fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0 && usable(&candidate))
            .then_some(candidate)
    })
}

/// A program named without a path is found on the jail's PATH in the
/// jail's root, which is not the caller's: when the caller's PATH finds a
/// different file (a pyenv shim, a venv, ~/.local/bin), another program
/// would run without a word. Returns the warning that says so, naming
/// both and how to run the caller's.
fn path_substitution(
    program: &str,
    caller_path: Option<&str>,
    jail_path: &str,
    grants: &[Capability],
    cwd: &Path,
) -> Option<String> {
    if program.contains('/') || program.is_empty() {
        return None;
    }
    let caller = find_on_path(program, caller_path?, cwd, |_| true)?;
    // What the jail shows of the host at the same path (/bin may be a
    // link to /usr/bin): resolved once.
    let system: Vec<PathBuf> = warden_jail::SYSTEM_DIRS
        .iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .collect();
    let visible = |p: &Path| {
        let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        system.iter().any(|d| p.starts_with(d))
            || grants.iter().any(|g| match g {
                Capability::FsRead(dir) | Capability::FsWrite(dir) => p.starts_with(dir),
                _ => false,
            })
    };
    // The jail's working directory is empty unless granted: an empty PATH
    // entry finds only what a grant shows there.
    let jail = find_on_path(program, jail_path, cwd, |p| visible(p));
    let same = |a: &Path, b: &Path| {
        a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    };
    if jail.as_deref().is_some_and(|j| same(j, &caller)) {
        return None;
    }
    let shown = program.escape_debug();
    let how = if visible(&caller) {
        format!("name it by path ({})", caller.display())
    } else {
        let dir = caller.parent().unwrap_or(Path::new("/"));
        format!(
            "name it by path ({}) and grant its directory with --allow fs:read:{}",
            caller.display(),
            dir.display()
        )
    };
    Some(match jail {
        Some(jail) => format!(
            "{shown}: your PATH finds {}, but the jail runs {} (its PATH is {jail_path}); to run yours, {how}",
            caller.display(),
            jail.display()
        ),
        None => format!(
            "{shown}: your PATH finds {}, but the jail cannot see it and finds no {shown} on its PATH ({jail_path}); to run yours, {how}",
            caller.display()
        ),
    })
}

/// Checks `--at PATH` for the `--allow` grant `cap` (given as `text`):
/// an `fs:` grant, shown at an absolute path without `.` or `..` that no
/// other view takes.
fn view(cap: &Capability, text: &str, at: &Path, views: &[View]) -> Result<View, EngineError> {
    let bad = |why: &str| {
        EngineError::Request(format!("--at {} (for --allow {text}): {why}", at.display()))
    };
    let grant = match cap {
        Capability::FsRead(p) | Capability::FsWrite(p) => p.clone(),
        _ => {
            return Err(bad(
                "only fs:read and fs:write grants can be shown at another path",
            ))
        }
    };
    let clean = at.is_absolute()
        && at.components().all(|c| {
            !matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )
        });
    if !clean || at.to_str().is_none() {
        return Err(bad(
            "expected an absolute path without . or .. (and valid UTF-8)",
        ));
    }
    if views.iter().any(|v| v.at == at) {
        return Err(bad("another grant is already shown there"));
    }
    if views.iter().any(|v| v.grant == grant) {
        return Err(bad("this grant is already shown at another path"));
    }
    Ok(View {
        grant,
        at: at.components().collect(),
    })
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
    // The policy first: its `isolation` takes part in routing.
    let loaded_policy = match &req.policy {
        Some(path) => Some(load_policy(&req.cwd.join(path))?),
        None => None,
    };
    let isolation = loaded_policy
        .as_ref()
        .and_then(|p| p.isolation.map(|i| (i, p.origin.as_str())));
    let (backend, routing) = crate::route_with_rule(req.backend.as_deref(), &req.argv, isolation)?;
    if backend != "wasm" && (req.fuel.is_some() || req.deterministic) {
        return Err(EngineError::Request(
            "--fuel and --deterministic apply to WebAssembly modules only (backend wasm)".into(),
        ));
    }
    if backend != "wasm" && req.tenant.is_some() {
        return Err(EngineError::Request(
            "--tenant applies to WebAssembly modules only (backend wasm): the key-value store is a WASM host capability".into(),
        ));
    }
    if backend != "wasm" && !req.modules.is_empty() {
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
    let mut views: Vec<View> = Vec::new();
    let mut limits = req.limits.clone();
    for (i, text) in req.allow.iter().enumerate() {
        let cap: Capability = text
            .parse()
            .map_err(|e| EngineError::Request(format!("--allow {text}: {e}")))?;
        for (_, at) in req.at.iter().filter(|(of, _)| *of == i) {
            views.push(view(&cap.clone().with_base(&req.cwd), text, at, &views)?);
        }
        match warden_policy::LimitField::of_capability(&cap) {
            Some((field, value)) => limits.set(field, value),
            None => requested.push(cap.with_base(&req.cwd)),
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
    let (grants, limits, policy_digest) = match (loaded_policy, &req.policy) {
        (Some(policy), Some(path)) => {
            let grants = if requested.is_empty() && !req.exact_grants {
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
        _ => {
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
        // A directory inside an `--at` view exists only in the jail: it is
        // taken as written (absolute and clean), not looked up on the host.
        Some(dir) if inside_a_view(dir, &req.at) => dir.clone(),
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
    // A view shows a grant: one the policy narrowed away shows nothing.
    views.retain(|v| {
        capabilities
            .iter()
            .any(|c| matches!(c, Capability::FsRead(p) | Capability::FsWrite(p) if *p == v.grant))
    });
    let mut notices = Vec::new();
    if backend != "wasm" {
        for entry in entry_files(&req.argv, &req.cwd) {
            let entry = Capability::FsRead(entry);
            let allowed = ceiling.as_ref().is_none_or(|p| p.permits(&entry));
            if allowed && !capabilities.iter().any(|c| c.subsumes(&entry)) {
                capabilities.push(entry);
            }
        }
        let jail_path = env_values
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(warden_jail::JAIL_PATH, |(_, v)| v.as_str());
        let caller_path = req
            .caller_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        notices.extend(path_substitution(
            &req.argv[0],
            caller_path,
            jail_path,
            &capabilities,
            &req.cwd,
        ));
    }
    let (audit_required, require_signed) = ceiling
        .as_ref()
        .map_or((false, false), |p| (p.audit_required, p.require_signed));
    Ok(Prepared {
        routing,
        audit_required,
        require_signed,
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
            views,
            secrets: Vec::new(),
            code: None,
        },
        backend,
        policy_digest,
        notices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn interpreters_are_known_by_path_and_version() {
        for name in [
            "python3",
            "python3.11",
            "/usr/bin/python3.11",
            "python",
            "node",
            "nodejs",
            "/usr/bin/php8.2",
            "bash",
            "/bin/sh",
            "perl5.36",
            "ruby3.1",
        ] {
            assert!(interpreter(name).is_some(), "{name}");
        }
        for name in [
            "shred",
            "pythonista",
            "nodemon",
            "php-fpm",
            "ls",
            "python3-config",
        ] {
            assert!(interpreter(name).is_none(), "{name}");
        }
    }

    #[test]
    fn the_script_is_the_first_operand_after_options() {
        let script = |words: &[&str]| {
            let a = argv(words);
            script_arg(&a[1..], interpreter(&a[0]).unwrap()).map(str::to_string)
        };
        assert_eq!(
            script(&["python3", "job.py", "x"]).as_deref(),
            Some("job.py")
        );
        assert_eq!(
            script(&["python3", "-u", "-W", "error", "job.py"]).as_deref(),
            Some("job.py")
        );
        assert_eq!(script(&["python3", "-c", "print(1)"]), None);
        assert_eq!(script(&["python3", "-m", "venv", "v"]), None);
        assert_eq!(
            script(&["node", "-r", "dotenv", "app.js"]).as_deref(),
            Some("app.js")
        );
        assert_eq!(script(&["node", "-e", "1"]), None);
        assert_eq!(
            script(&["php", "-d", "x=1", "-f", "run.php"]).as_deref(),
            Some("run.php")
        );
        assert_eq!(script(&["php", "-r", "echo 1;"]), None);
        assert_eq!(
            script(&["sh", "-e", "-o", "pipefail", "s.sh"]).as_deref(),
            Some("s.sh")
        );
        assert_eq!(
            script(&["bash", "--", "-odd.sh"]).as_deref(),
            Some("-odd.sh")
        );
        assert_eq!(script(&["perl", "-e", "1"]), None);
    }

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
