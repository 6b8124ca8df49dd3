//! `dev.warden.backend: gvisor`: the container runs under runsc (gVisor's
//! OCI runtime, Debian's `runsc`), which takes the same bundle; warden-oci
//! keeps its record, cgroup, report and ledger entry. The monitor is a
//! subreaper and starts `runsc create`: runsc's sandbox is reparented to
//! it when `runsc create` returns, so the monitor waits for the sandbox as
//! for the jail's first process, and ends as it did. Every later command
//! is passed to runsc with the container's own runsc root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::OciError;

/// The runsc binary, as the gVisor backend finds it.
pub fn runsc() -> Result<PathBuf, OciError> {
    warden_jail::runsc_path()
        .map_err(|why| OciError::Unsupported(format!("dev.warden.backend=gvisor: {why}")))
}

/// Marks a container whose spec joins a network namespace by path.
const NETWORK_GIVEN: &str = "network-given";

/// Notes, before runsc first runs, whether the spec joins a network
/// namespace by path.
pub fn note_network(dir: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_some()
            })
        });
    if given {
        std::fs::write(dir.join(NETWORK_GIVEN), b"")
            .map_err(|e| format!("note the network: {e}"))?;
    }
    Ok(())
}

/// runsc's own state directory for container `dir`.
pub fn root_of(dir: &Path) -> PathBuf {
    dir.join("runsc")
}

/// runsc's global flags for this host (ptrace: Debian 12's runsc has no
/// systrap, and KVM hangs in nested VMs).
fn base(dir: &Path) -> Result<Command, OciError> {
    let mut c = Command::new(runsc()?);
    // A network namespace given by path (one a CNI plugin set up) is the
    // sandbox's network; otherwise gVisor's own loopback only.
    let network = if dir.join(NETWORK_GIVEN).exists() {
        "--network=sandbox"
    } else {
        "--network=none"
    };
    c.arg("--root")
        .arg(root_of(dir))
        .arg(network)
        .arg("--platform=ptrace")
        .arg("--log")
        .arg(dir.join("runsc.log"));
    Ok(c)
}

/// Runs `runsc … ARGS`, its stdio inherited; its failure is one line.
pub fn run(dir: &Path, args: &[&str]) -> Result<(), OciError> {
    let mut c = base(dir)?;
    let out = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| OciError::Io("run runsc".into(), e))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(OciError::Create(format!(
        "runsc {}: {line}",
        args.first().copied().unwrap_or("")
    )))
}

/// `runsc create` in the monitor, with the container's stdio (the
/// monitor's, inherited from `create`); the sandbox's pid.
pub fn create(
    dir: &Path,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    id: &str,
    console: Option<&Path>,
) -> Result<i32, String> {
    std::fs::create_dir_all(root_of(dir)).map_err(|e| format!("create runsc's root: {e}"))?;
    note_network(dir, spec)?;
    let pid_file = dir.join("sandbox.pid");
    let mut c = base(dir).map_err(|e| e.to_string())?;
    c.arg("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    if let Some(s) = console {
        c.arg("--console-socket").arg(s);
    }
    // The container's stdio is runsc's (it hands its own to the sandbox):
    // inherited, and never a pipe waited on here. Its errors are in its log.
    let status = c
        .arg(id)
        .status()
        .map_err(|e| format!("run runsc create: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("runsc.log")).unwrap_or_default();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("FATAL") || l.contains("error") || l.contains("Error"))
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(format!("runsc create failed: {line}"));
    }
    std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| "runsc create wrote no pid".to_string())
}

/// `runsc exec` of `o.process` (written out as runsc takes it); its exit
/// status unless detached.
pub fn exec(dir: &Path, o: &crate::container::ExecOptions<'_>) -> Result<i32, OciError> {
    let file = dir.join(format!("exec-{}.json", std::process::id()));
    let text = serde_json::to_vec(&o.process).map_err(|e| OciError::Config(e.to_string()))?;
    std::fs::write(&file, text)
        .map_err(|e| OciError::Io(format!("write {}", file.display()), e))?;
    let mut c = base(dir)?;
    c.arg("exec").arg("--process").arg(&file);
    if o.detach {
        c.arg("--detach");
    }
    if let Some(p) = o.pid_file {
        c.arg("--pid-file").arg(p);
    }
    if let Some(s) = o.console_socket {
        c.arg("--console-socket").arg(s);
    }
    let status = c.arg(o.id).status();
    let _ = std::fs::remove_file(&file);
    let status = status.map_err(|e| OciError::Io("run runsc exec".into(), e))?;
    use std::os::unix::process::ExitStatusExt as _;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
