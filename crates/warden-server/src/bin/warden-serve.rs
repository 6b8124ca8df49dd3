//! `warden-serve`: what `warden serve` executes (with the same
//! arguments), so that tokio and axum are not linked into `warden`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "warden serve",
    version,
    about = "Serve the sandbox over HTTP: POST /v1/execute, /v1/submissions, /v1/sandboxes, GET /v1/streams/{id}, /v1/runtimes, /healthz, /readyz, /metrics, /openapi.json"
)]
struct Args {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Warden's state directory (as for the CLI).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The configuration [default: STATE/warden.yaml, if any].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The `warden` binary that runs each invocation [default: beside this one].
    #[arg(long, value_name = "PATH")]
    warden: Option<PathBuf>,
    /// Runs at once [default: twice the cores].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Requests that may wait for a worker; past that, 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    queue: usize,
    /// Largest request body, e.g. 8MiB.
    #[arg(long = "max-body", value_name = "SIZE", default_value = "8MiB", value_parser = size)]
    max_body: u64,
    /// Longest wall time a request may ask for.
    #[arg(long = "max-wall-time", value_name = "DUR", default_value = "300s", value_parser = duration)]
    max_wall_time: Duration,
    /// After SIGTERM/SIGINT: how long requests in flight may go on before
    /// their runs are stopped.
    #[arg(long = "shutdown-grace", value_name = "DUR", default_value = "30s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Submissions that may wait for a worker (a queue of their own); past
    /// that, POST /v1/submissions answers 503 with Retry-After.
    #[arg(long = "submission-queue", value_name = "N", default_value_t = 1024)]
    submission_queue: usize,
    /// How long a finished submission (and its result) is kept.
    #[arg(long = "submission-ttl", value_name = "DUR", default_value = "24h", value_parser = duration)]
    submission_ttl: Duration,
    /// Longest ttl_s (and idle_timeout_s) a sandbox may ask for.
    #[arg(long = "sandbox-max-ttl", value_name = "DUR", default_value = "24h", value_parser = duration)]
    sandbox_max_ttl: Duration,
    /// Let callback URLs reach private (RFC 1918, unique-local) and
    /// loopback addresses; without it only public ones are POSTed to.
    /// Link-local and cloud metadata addresses are refused either way.
    #[arg(long = "callback-allow-private")]
    callback_allow_private: bool,
    /// Where sandboxes' workspaces are kept (ROOT/ID/workspace; outside the
    /// state directory, whose paths the jail never grants) [default:
    /// STATE-sandboxes, beside the state directory].
    #[arg(long = "sandbox-root", value_name = "DIR")]
    sandbox_root: Option<PathBuf>,
    /// Run WebAssembly requests in a `warden` child each, as jailed ones
    /// are, instead of in this process on a shared engine.
    #[arg(long = "wasm-in-child")]
    wasm_in_child: bool,
    /// How long a streamed run's events are kept after it ended, for
    /// resuming with GET /v1/streams/{id}.
    #[arg(long = "stream-retention", value_name = "DUR", default_value = "5m", value_parser = duration)]
    stream_retention: Duration,
    /// The interval of keep-alive comments on an event stream while its
    /// run is silent.
    #[arg(long = "stream-keepalive", value_name = "DUR", default_value = "15s", value_parser = duration)]
    stream_keepalive: Duration,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs
    /// --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

fn size(s: &str) -> Result<u64, String> {
    warden_policy::parse_size(s).map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    warden_policy::parse_duration(s).map_err(|e| e.to_string())
}

/// The arguments without the `serve` word `warden serve` passes on: the
/// first word that is not a flag or the value of `--state`/`--config`.
fn without_serve_word(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(arg0) = iter.next() {
        out.push(arg0);
    }
    let mut removed = false;
    let mut skip_value = false;
    for arg in iter {
        if !removed && !skip_value {
            match arg.to_str() {
                Some("--state" | "--config") => skip_value = true,
                Some("serve") => {
                    removed = true;
                    continue;
                }
                Some(a) if a.starts_with('-') => {}
                _ => removed = true,
            }
        } else {
            skip_value = false;
        }
        out.push(arg);
    }
    out
}

fn main() -> ExitCode {
    // `warden` holds SIGINT/SIGTERM/SIGHUP/SIGQUIT blocked from its first
    // instruction (so that a run still writes its report), and a signal
    // mask survives exec: unblock them, or this service would never hear
    // its shutdown signal. Threads started later inherit this mask.
    if let Err(e) = warden_engine::hold_termination_signals(false) {
        eprintln!("warden: cannot unblock the termination signals: {e}");
        return ExitCode::from(125);
    }
    let args = Args::parse_from(without_serve_word(std::env::args_os().collect()));
    // Both or neither, refused like a bad flag (exit 2), in one line.
    if let Some(missing) = match (&args.tls_cert, &args.tls_key) {
        (Some(_), None) => Some("--tls-cert needs --tls-key"),
        (None, Some(_)) => Some("--tls-key needs --tls-cert"),
        _ => None,
    } {
        eprintln!("warden: {missing} (give both, or neither for plain HTTP)");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Settings first, while this process has one thread (the configuration
    // may remove settings variables from the environment).
    if let Some(state) = &args.state {
        let absolute = std::env::current_dir()
            .map(|cwd| cwd.join(state))
            .unwrap_or_else(|_| state.clone());
        std::env::set_var("WARDEN_STATE", absolute);
    }
    // The certificate and key before anything else: a bad file stops the
    // service before it listens or touches the state.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(warden_server::tls::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = warden_core::state::default_state_dir()
        .context("no state directory: give --state DIR or set WARDEN_STATE (HOME is not set)")?;
    warden_core::state::private_dir(&state)
        .with_context(|| format!("state directory {}", state.display()))?;
    let (config, warnings) = warden_engine::config::load(&state, args.config.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration refused: {e}"))?;
    for w in warnings {
        eprintln!("warden: {w}");
    }
    let quotas = config.serve.quotas.clone();
    warden_engine::config::install(config);
    if let Some(key) = warden_server::bootstrap::bootstrap(&state)? {
        eprintln!(
            "warden: fresh state {}: tenant {} and principal {} (role {}) added",
            state.display(),
            warden_core::DEFAULT_TENANT,
            warden_server::bootstrap::DEV_PRINCIPAL,
            warden_server::bootstrap::DEV_ROLE
        );
        eprintln!("warden: development API key: {}", &*key);
        eprintln!("warden: (shown only now; send it as `Authorization: Bearer KEY`)");
    }
    let warden = match args.warden {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot locate this binary (to find `warden` beside it)")?
            .with_file_name("warden"),
    };
    let runtime_dir = std::env::temp_dir().join(format!(
        "warden-serve-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&runtime_dir)
            .with_context(|| format!("cannot make {}", runtime_dir.display()))?;
    }
    let runtime_tmpfs = private_tmpfs(&runtime_dir);
    let sandbox_root = match args.sandbox_root {
        Some(p) => std::env::current_dir().map(|cwd| cwd.join(&p)).unwrap_or(p),
        None => {
            let mut name = state.as_os_str().to_os_string();
            name.push("-sandboxes");
            PathBuf::from(name)
        }
    };
    if sandbox_root.starts_with(&state) {
        anyhow::bail!(
            "--sandbox-root {} is inside the state directory {}, whose paths the jail never grants",
            sandbox_root.display(),
            state.display()
        );
    }
    let bounds = warden_server::api::Bounds {
        max_wall_time: args.max_wall_time,
        default_wall_time: warden_server::api::Bounds::default()
            .default_wall_time
            .min(args.max_wall_time),
        ..Default::default()
    };
    let workers = args
        .workers
        .unwrap_or_else(warden_server::Settings::default_workers)
        .max(1);
    let settings = warden_server::Settings {
        listen: args.listen,
        runner: warden_server::runner::Runner {
            warden,
            state,
            config: args.config,
            runtime_dir: runtime_dir.clone(),
        },
        bounds,
        body_limit: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        workers,
        queue: args.queue,
        shutdown_grace: args.shutdown_grace,
        quotas,
        submission_queue: args.submission_queue,
        submission_ttl: args.submission_ttl,
        sandbox_max_ttl: args.sandbox_max_ttl,
        callback_allow_private: args.callback_allow_private,
        sandbox_root,
        wasm_in_process: !args.wasm_in_child,
        streams: warden_server::stream::StreamSettings {
            retention: args.stream_retention,
            keep_alive: args.stream_keepalive.max(Duration::from_millis(100)),
            ..Default::default()
        },
        tls,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(warden_server::serve(
        settings,
        warden_server::server::termination(),
        move |addr| {
            eprintln!("warden: listening on {scheme}://{addr} ({workers} workers)");
        },
    ));
    drop(runtime);
    if runtime_tmpfs {
        let _ = rustix::mount::unmount(&runtime_dir, rustix::mount::UnmountFlags::DETACH);
    }
    let _ = std::fs::remove_dir_all(&runtime_dir);
    served?;
    eprintln!("warden: stopped");
    Ok(())
}

/// As root, the run directories (each request's files, written and
/// removed once per run) go on a tmpfs of this service's own, mounted
/// over `dir` in a mount namespace of its own (made now, while this
/// process has one thread; the runs it starts inherit it): no disk
/// journal, fsync or discard per request, and nothing left mounted on
/// the host if the service dies. Otherwise (or if that fails) they stay
/// on `dir`'s filesystem.
fn private_tmpfs(dir: &std::path::Path) -> bool {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    // rustix deprecates its safe `unshare` because unsharing under other
    // threads is unsound; this process has one thread (the async runtime
    // is not started yet), so no other thread shares its context.
    #[allow(deprecated)]
    let unshared = rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS);
    if unshared.is_err() {
        return false;
    }
    // Slave: the host's later mounts (a sandbox workspace's filesystem)
    // still show; this one does not go back.
    if rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .is_err()
    {
        return false;
    }
    rustix::mount::mount(
        "warden-serve",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0700,size=25%",
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::without_serve_word;

    fn strip(args: &[&str]) -> Vec<String> {
        without_serve_word(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_serve_word_of_warden_serve_is_dropped_once() {
        assert_eq!(
            strip(&["w", "serve", "--listen", "x"]),
            ["w", "--listen", "x"]
        );
        assert_eq!(
            strip(&["w", "--state", "serve", "serve", "--listen", "serve"]),
            ["w", "--state", "serve", "--listen", "serve"]
        );
        assert_eq!(
            strip(&["w", "--config", "c", "serve"]),
            ["w", "--config", "c"]
        );
        assert_eq!(strip(&["w", "--listen", "x"]), ["w", "--listen", "x"]);
    }
}
