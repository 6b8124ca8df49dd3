//! OCI hooks: each is run with the container's state (JSON) on its stdin,
//! its own args and environment only, and its timeout; where and when is
//! the caller's (createRuntime and prestart by the monitor once the
//! namespaces exist, createContainer by the init before pivot_root,
//! startContainer by the init before exec, poststart by `start`,
//! poststop by `delete`).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// Runs `hooks` in order; the first failure is the error, naming the hook.
pub fn run_all(
    kind: &str,
    hooks: Option<&Vec<Hook>>,
    state: &serde_json::Value,
) -> Result<(), String> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run(h, state).map_err(|why| format!("{kind} hook {i} ({}): {why}", h.path().display()))?;
    }
    Ok(())
}

fn run(h: &Hook, state: &serde_json::Value) -> Result<(), String> {
    if !h.path().is_absolute() {
        return Err("path must be absolute".into());
    }
    let mut c = Command::new(h.path());
    let args = h.args().clone().unwrap_or_default();
    if let Some(argv0) = args.first() {
        use std::os::unix::process::CommandExt as _;
        c.arg0(argv0);
    }
    c.args(args.iter().skip(1)).env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            c.env(k, v);
        }
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read as _;
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                let err = err.lines().next().unwrap_or("").to_string();
                return Err(format!(
                    "{status}{}",
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", h.timeout().unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
