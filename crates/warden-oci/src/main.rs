//! `warden-oci`: runc's command line over Warden's jail. containerd's
//! runc shim calls it as it calls runc (`--root R --log F --log-format
//! json create --bundle B --pid-file P ID`, `start ID`, `state ID`, ...).
//! Errors are one line on stderr and, with `--log`, a JSON (or text) line
//! in the log the shim reads back; the exit status is 1, as runc's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use warden_oci::container::{self, CreateOptions};
use warden_oci::state::Record;
use warden_oci::OciError;

#[derive(Parser)]
#[command(
    name = "warden-oci",
    about = "Warden's jail as an OCI runtime (runc's command line)",
    disable_version_flag = true
)]
struct Cli {
    /// Print the version (as `runc --version` does).
    #[arg(short = 'v', long = "version", global = false)]
    version: bool,
    /// Where container state lives.
    #[arg(long, global = true, default_value = "/run/warden-oci")]
    root: PathBuf,
    /// Log file for errors (the shim reads it back).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted; cgroupfs is used (systemd's form of cgroupsPath is
    /// mapped to the directory systemd would make).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted as runc does (`true|false|auto`).
    #[arg(long, global = true)]
    rootless: Option<String>,
    /// Accepted (checkpointing is not supported).
    #[arg(long, global = true)]
    criu: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container (its process waits until `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short = 'd', long)]
        detach: bool,
        #[arg(long = "keep")]
        keep: bool,
    },
    /// The container's OCI state (JSON).
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's process.
    Kill {
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container (and everything it made).
    Delete {
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    /// The container's processes.
    Ps {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List containers.
    List {
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Change a container's resources (`--resources FILE`, `-` for stdin).
    Update {
        #[arg(short = 'r', long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        memory: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        id: String,
    },
    /// What this runtime supports (JSON, as runc prints it).
    Features,
    /// Run another process in a running container.
    Exec(ExecArgs),
}

#[derive(Args)]
struct ExecArgs {
    /// The process (an OCI `process` object, JSON); else the command.
    #[arg(short = 'p', long)]
    process: Option<PathBuf>,
    #[arg(short = 'd', long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 't', long)]
    tty: bool,
    /// uid[:gid]
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    #[arg(short = 'c', long = "cap")]
    cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long = "process-label")]
    process_label: Option<String>,
    #[arg(long)]
    apparmor: Option<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long)]
    cgroup: Option<String>,
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The process `exec` runs: the `--process` file, or the container's own
/// process with the command and the flags put in.
fn exec_process(root: &Path, a: &ExecArgs) -> Result<oci_spec::runtime::Process, OciError> {
    let _ = (&a.process_label, &a.apparmor, &a.cgroup);
    if let Some(p) = &a.process {
        let text =
            std::fs::read(p).map_err(|e| OciError::Io(format!("read {}", p.display()), e))?;
        let mut de = serde_json::Deserializer::from_slice(&text);
        return serde_path_to_error::deserialize(&mut de).map_err(|e| {
            OciError::Config(format!("{}: {}: {}", p.display(), e.path(), e.inner()))
        });
    }
    if a.command.is_empty() {
        return Err(OciError::Usage(
            "exec: no command given (or --process)".into(),
        ));
    }
    let record = Record::load(root, &a.id)?;
    let bundle = warden_oci::spec::Bundle::load(&record.bundle)?;
    let mut p = bundle.spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse(), g.parse()),
            None => (u.parse(), Ok(p.user().gid())),
        };
        let (Ok(uid), Ok(gid)) = (uid, gid) else {
            return Err(OciError::Usage(format!("--user {u}: expected UID[:GID]")));
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &a.cap {
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::json!(c))
                    .map_err(|_| OciError::Usage(format!("--cap {c}: unknown capability")))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    p.set_terminal(Some(a.tty));
    Ok(p)
}

#[derive(Args)]
struct CreateArgs {
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

/// Writes an error where the caller looks: stderr, and the log.
fn report_error(cli_log: Option<&Path>, format: &str, msg: &str) {
    eprintln!("warden-oci: {msg}");
    let Some(path) = cli_log else { return };
    let time = jiff::Timestamp::now().to_string();
    let line = if format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn features() -> serde_json::Value {
    let ns = ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"];
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
            "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
            "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ns,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "dev.warden.backend": "jail"
        }
    })
}

fn run(cli: Cli) -> Result<i32, OciError> {
    if cli.version {
        println!(
            "warden-oci version {}\nspec: 1.2.0",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(0);
    }
    let root = cli.root.as_path();
    let Some(command) = cli.command else {
        return Err(OciError::Usage(
            "no command given (create, start, state, kill, delete, ...)".into(),
        ));
    };
    match command {
        Command::Create(a) => {
            // --no-pivot and --no-new-keyring are accepted as runc does; the
            // root is always pivoted into, a keyring always made.
            let _ = (a.no_pivot, a.no_new_keyring);
            container::create(&CreateOptions {
                root,
                id: &a.id,
                bundle: &a.bundle,
                pid_file: a.pid_file.as_deref(),
                systemd_cgroup: cli.systemd_cgroup,
                console_socket: a.console_socket.as_deref(),
                preserve_fds: a.preserve_fds,
            })?;
            Ok(0)
        }
        Command::Run {
            create,
            detach,
            keep,
        } => {
            let record = container::create(&CreateOptions {
                root,
                id: &create.id,
                bundle: &create.bundle,
                pid_file: create.pid_file.as_deref(),
                systemd_cgroup: cli.systemd_cgroup,
                console_socket: create.console_socket.as_deref(),
                preserve_fds: create.preserve_fds,
            })?;
            if let Err(e) = container::start(root, &create.id) {
                let _ = container::delete(root, &create.id, true);
                return Err(e);
            }
            if detach {
                return Ok(0);
            }
            // The monitor is this process's child: its end is the container's.
            let status = warden_jail::sys::waitpid(record.monitor_pid, 0)
                .map(|(_, st)| st)
                .map_err(|e| OciError::Io("wait for the container".into(), e))?;
            if !keep {
                container::delete(root, &create.id, true)?;
            }
            Ok(container::exit_code(status))
        }
        Command::Start { id } => container::start(root, &id).map(|()| 0),
        Command::State { id } => {
            let record = Record::load(root, &id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&record.oci_state()).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = container::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill(root, &id, sig, all).map(|()| 0)
        }
        Command::Delete { force, id } => container::delete(root, &id, force).map(|()| 0),
        Command::Ps { format, id, .. } => {
            let pids = container::ps(root, &id)?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string(&pids).unwrap_or_default()),
                "table" => {
                    println!("PID");
                    for p in pids {
                        println!("{p}");
                    }
                }
                other => return Err(OciError::Usage(format!("invalid format option {other:?}"))),
            }
            Ok(0)
        }
        Command::Pause { id } => container::pause(root, &id, true).map(|()| 0),
        Command::Resume { id } => container::pause(root, &id, false).map(|()| 0),
        Command::List { format, quiet } => {
            let all = container::list(root);
            if quiet {
                for r in &all {
                    println!("{}", r.id);
                }
            } else if format == "json" {
                let states: Vec<_> = all.iter().map(Record::oci_state).collect();
                println!("{}", serde_json::to_string(&states).unwrap_or_default());
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
                for r in &all {
                    let s = r.oci_state();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\troot",
                        r.id,
                        s["pid"],
                        r.status().as_str(),
                        r.bundle.display(),
                        r.created
                    );
                }
            }
            Ok(0)
        }
        Command::Update {
            resources,
            memory,
            pids_limit,
            cpu_shares,
            cpu_quota,
            cpu_period,
            id,
        } => {
            let mut r: serde_json::Value = match &resources {
                Some(p) if p == Path::new("-") => serde_json::from_reader(std::io::stdin())
                    .map_err(|e| OciError::Config(format!("resources from stdin: {e}")))?,
                Some(p) => {
                    let text = std::fs::read(p)
                        .map_err(|e| OciError::Io(format!("read {}", p.display()), e))?;
                    serde_json::from_slice(&text)
                        .map_err(|e| OciError::Config(format!("{}: {e}", p.display())))?
                }
                None => serde_json::json!({}),
            };
            if let Some(m) = memory {
                let bytes = warden_policy::parse_size(&m)
                    .map_err(|e| OciError::Usage(format!("--memory {m}: {e}")))?;
                r["memory"]["limit"] = bytes.into();
            }
            if let Some(p) = pids_limit {
                r["pids"]["limit"] = p.into();
            }
            if let Some(s) = cpu_shares {
                r["cpu"]["shares"] = s.into();
            }
            if let Some(q) = cpu_quota {
                r["cpu"]["quota"] = q.into();
            }
            if let Some(p) = cpu_period {
                r["cpu"]["period"] = p.into();
            }
            container::update(root, &id, r).map(|()| 0)
        }
        Command::Exec(a) => {
            let process = exec_process(root, &a)?;
            container::exec(&container::ExecOptions {
                root,
                id: &a.id,
                process,
                pid_file: a.pid_file.as_deref(),
                detach: a.detach,
                ignore_paused: a.ignore_paused,
                console_socket: a.console_socket.as_deref(),
                preserve_fds: a.preserve_fds,
            })
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&features()).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("warden-oci: {first}");
            return ExitCode::from(1);
        }
    };
    let log = cli.log.clone();
    let format = cli.log_format.clone();
    let _ = cli.debug;
    let _ = (&cli.rootless, &cli.criu);
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            report_error(log.as_deref(), &format, &e.to_string());
            ExitCode::from(1)
        }
    }
}
