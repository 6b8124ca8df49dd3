//! What every end-to-end test of the service shares: the binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// `warden-serve`, which cargo builds for these tests.
pub fn serve_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-serve"))
}

/// The `warden` binary beside `warden-serve` (with `warden-wasm`), built
/// once per test process unless it is already newer than every source of
/// the workspace: `cargo test --workspace` has built it with the
/// workspace's features, and a second build for warden-cli alone would
/// resolve features differently and rebuild much of the tree.
pub fn warden_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let serve = serve_bin();
            let dir = serve.parent().expect("binary directory");
            let warden = dir.join("warden");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            if !fresh(&[warden.clone(), dir.join("warden-wasm")], &root) {
                let mut build = Command::new(env!("CARGO"));
                build.current_dir(&root).args([
                    "build",
                    "-p",
                    "warden-cli",
                    "--bin",
                    "warden",
                    "--bin",
                    "warden-wasm",
                ]);
                if dir.ends_with("release") {
                    build.arg("--release");
                }
                let status = build.status().expect("run cargo build -p warden-cli");
                assert!(status.success(), "cargo build -p warden-cli failed");
            }
            assert!(
                warden.is_file(),
                "{} missing after cargo build -p warden-cli (another target directory?)",
                warden.display()
            );
            warden
        })
        .clone()
}

/// Whether every binary exists and is newer than every `.rs` and `.toml`
/// file under `root/crates` and `root/Cargo.lock`.
fn fresh(binaries: &[PathBuf], root: &Path) -> bool {
    let built = binaries
        .iter()
        .map(|b| std::fs::metadata(b).and_then(|m| m.modified()).ok())
        .collect::<Option<Vec<SystemTime>>>()
        .and_then(|times| times.into_iter().min());
    let Some(built) = built else {
        return false;
    };
    let mut newest = std::fs::metadata(root.join("Cargo.lock"))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut todo = vec![root.join("crates")];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                if let Ok(t) = meta.modified() {
                    newest = newest.max(t);
                }
            }
        }
    }
    built > newest
}

/// A WebAssembly guest (wasm32-wasip1) built by tests-guests/build.sh: its
/// bytes. (Not every test binary that shares this module uses it.)
#[allow(dead_code)]
pub fn guest(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("sh")
        .arg(root.join("tests-guests/build.sh"))
        .output()
        .expect("run tests-guests/build.sh");
    assert!(
        out.status.success(),
        "tests-guests/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).expect("UTF-8 path");
    let path = Path::new(dir.trim()).join(format!("wasm32-wasip1/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("guest {}: {e}", path.display()))
}

/// `warden --state STATE secret put NAME` of `value`, as the principal of
/// `key`. (Not every test binary that shares this module uses it.)
#[allow(dead_code)]
pub fn put_secret(state: &Path, key: &str, name: &str, value: &[u8]) {
    use std::io::Write as _;
    let mut put = Command::new(warden_bin())
        .env("WARDEN_API_KEY", key)
        .arg("--state")
        .arg(state)
        .args(["secret", "put", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run warden secret put");
    put.stdin
        .take()
        .expect("stdin")
        .write_all(value)
        .expect("write the value");
    assert!(
        put.wait().expect("wait").success(),
        "warden secret put {name}"
    );
}

/// Stands for a public host in [`in_private_net`].
#[allow(dead_code)]
pub const PUBLIC: &str = "11.22.33.44";

/// Runs `f` on a thread moved into a fresh network namespace (its loopback
/// up, [`PUBLIC`] and 169.254.169.254 on it): servers `f` starts and
/// processes it spawns live there, and a service started from it reaches
/// "public" test servers while Warden still refuses the host's loopback.
/// Needs root (CI runs these as root); fails without it, never skips.
#[allow(dead_code)]
pub fn in_private_net<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    use std::io::BufRead as _;
    use std::os::fd::AsFd as _;
    let script = format!(
        "set -e; ip link set lo up; ip addr add {PUBLIC}/32 dev lo; \
         ip addr add 169.254.169.254/32 dev lo; echo ready; read _"
    );
    let mut shell = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run unshare(1)");
    let mut line = String::new();
    std::io::BufReader::new(shell.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from the namespace's shell");
    assert_eq!(
        line.trim(),
        "ready",
        "making a network namespace failed (these tests need root)"
    );
    let ns =
        std::fs::File::open(format!("/proc/{}/ns/net", shell.id())).expect("open the namespace");
    drop(shell.stdin.take());
    let _ = shell.wait();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns (these tests need root)");
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
