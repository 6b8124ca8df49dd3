//! Under containerd: a private containerd (its own root, state and socket
//! in a temporary directory, the CRI plugin off) runs containers through
//! its runc shim with `--runc-binary warden-oci`, on a rootfs made from
//! this machine's busybox (no registry is reachable). Needs root,
//! containerd, runc and busybox-static (scripts/setup.sh installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd; theirs end with their containers.
        let _ = Command::new("pkill")
            .args([
                "-9",
                "-f",
                &format!("containerd-shim-runc-v2 .*{}", self.dir.display()),
            ])
            .status();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("state"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed (scripts/setup.sh installs it)");
}

impl Containerd {
    fn start(tag: &str) -> Containerd {
        let dir = std::env::temp_dir().join(format!("warden-ctrd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = Command::new(which("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("start containerd");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let base = self.dir.join(format!("out-{}", rand_suffix()));
        let status = Command::new(which("ctr"))
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(base.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(base.with_extension("err")).unwrap())
            .status()
            .expect("run ctr");
        let out = Output {
            status,
            stdout: std::fs::read(base.with_extension("out")).unwrap_or_default(),
            stderr: std::fs::read(base.with_extension("err")).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(base.with_extension("out"));
        let _ = std::fs::remove_file(base.with_extension("err"));
        out
    }

    /// `ctr run --rm` of `cmd` on the busybox rootfs with `runtime`.
    fn run(&self, runtime: &Path, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let rootfs = self.rootfs();
        let mut args = vec!["run", "--rm", "--runc-binary", runtime.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", rootfs.to_str().unwrap(), id]);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// A rootfs of this machine's static busybox (made once per test).
    fn rootfs(&self) -> PathBuf {
        let r = self.dir.join("rootfs");
        if !r.join("bin/busybox").exists() {
            std::fs::create_dir_all(r.join("bin")).unwrap();
            for d in ["proc", "dev", "sys", "tmp", "etc", "run"] {
                std::fs::create_dir_all(r.join(d)).unwrap();
            }
            std::fs::copy(which("busybox"), r.join("bin/busybox")).unwrap();
            for tool in [
                "sh", "echo", "true", "false", "sleep", "cat", "ls", "id", "hostname", "head",
                "dd", "kill",
            ] {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(tool)).unwrap();
            }
        }
        r
    }
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn warden_oci() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-oci"))
}

fn ctx(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The runtime's own state directory containerd's shim gives it.
fn runtime_root(c: &Containerd) -> PathBuf {
    c.dir.join("state/io.containerd.runtime.v2.task/default")
}

#[test]
fn containers_run_under_containerd_with_warden_oci() {
    let c = Containerd::start("run");
    let oci = warden_oci();
    // Prints and exits 0.
    let out = c.run(
        &oci,
        "hello",
        &[],
        &["/bin/sh", "-c", "echo hello from warden-oci"],
    );
    assert!(out.status.success(), "{}", ctx(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from warden-oci"
    );
    // dev.warden.backend=gvisor: the same container under runsc — gVisor's
    // kernel answers uname; the exit status is the container's.
    let out = c.run(
        &oci,
        "strong",
        &["--annotation", "dev.warden.backend=gvisor"],
        &["/bin/sh", "-c", "uname -r; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", ctx(&out));
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !seen.is_empty() && seen != host.trim(),
        "{seen:?} under gVisor\n{}",
        ctx(&out)
    );
    // …and exec, pause and resume go to runsc too.
    let rootfs = c.rootfs();
    let out = c.ctr(&[
        "run",
        "-d",
        "--annotation",
        "dev.warden.backend=gvisor",
        "--runc-binary",
        oci.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "strong-long",
        "/bin/sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", ctx(&out));
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "g1",
        "strong-long",
        "/bin/sh",
        "-c",
        "uname -r; exit 8",
    ]);
    assert_eq!(out.status.code(), Some(8), "{}", ctx(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(seen.as_str()),
        "{}",
        ctx(&out)
    );
    for (verb, status) in [("pause", "PAUSED"), ("resume", "RUNNING")] {
        let out = c.ctr(&["task", verb, "strong-long"]);
        assert!(out.status.success(), "{verb}: {}", ctx(&out));
        let listed = String::from_utf8_lossy(&c.ctr(&["task", "ls"]).stdout).into_owned();
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("strong-long") && l.contains(status)),
            "{listed}"
        );
    }
    assert!(c
        .ctr(&["task", "kill", "-s", "SIGKILL", "strong-long"])
        .status
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.ctr(&["task", "rm", "strong-long"]).status.success() {
        assert!(Instant::now() < deadline, "the gVisor task did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.ctr(&["container", "rm", "strong-long"]).status.success());
    // dev.warden.backend=wasm: the module runs under Warden's WebAssembly
    // engine (warden-wasm, beside warden-oci), the rootfs its only preopen.
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-guests/wat");
    for name in ["hello.wat", "exit7.wat"] {
        std::fs::copy(wat.join(name), rootfs.join(name)).unwrap();
    }
    let out = c.run(
        &oci,
        "wasm1",
        &["--annotation", "dev.warden.backend=wasm"],
        &["/hello.wat"],
    );
    assert!(out.status.success(), "{}", ctx(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from wat",
        "{}",
        ctx(&out)
    );
    let out = c.run(
        &oci,
        "wasm2",
        &["--annotation", "dev.warden.backend=wasm"],
        &["/exit7.wat"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", ctx(&out));
    // An unknown backend is refused, naming the annotation.
    let out = c.run(
        &oci,
        "bogus",
        &["--annotation", "dev.warden.backend=vm"],
        &["/bin/true"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", ctx(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dev.warden.backend"),
        "{}",
        ctx(&out)
    );
    // A memory limit's kill is 137.
    let out = c.run(
        &oci,
        "oom",
        &["--memory-limit", "16777216"],
        &[
            "/bin/sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", ctx(&out));
    // exec and ps in a running container.
    let rootfs = c.rootfs();
    let out = c.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        oci.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "long",
        "/bin/sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", ctx(&out));
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "long",
        "/bin/sh",
        "-c",
        "echo in-exec; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", ctx(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("in-exec"),
        "{}",
        ctx(&out)
    );
    let out = c.ctr(&["task", "ps", "long"]);
    assert!(out.status.success(), "{}", ctx(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().skip(1).count(), 1, "{listed}");
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "long"]);
    assert!(out.status.success(), "{}", ctx(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&c.ctr(&["task", "ls"]).stdout).contains("STOPPED") {
        assert!(Instant::now() < deadline, "the task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.ctr(&["task", "rm", "long"]).status.success());
    assert!(c.ctr(&["container", "rm", "long"]).status.success());
    // Nothing of them is left: state, cgroups, processes.
    let left: Vec<_> = std::fs::read_dir(runtime_root(&c))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    for id in ["hello", "oom", "long"] {
        assert!(
            !Path::new("/sys/fs/cgroup/memory/default").join(id).exists(),
            "{id}'s cgroup left"
        );
    }
}

/// 20 containers at once all finish, and leave no state, cgroup or mount.
#[test]
fn twenty_containers_in_parallel_leave_nothing() {
    let c = std::sync::Arc::new(Containerd::start("par"));
    let oci = warden_oci();
    let _ = c.rootfs();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (c, oci) = (c.clone(), oci.clone());
            std::thread::spawn(move || {
                let id = format!("p{i}");
                let out = c.run(
                    &oci,
                    &id,
                    &[],
                    &["/bin/sh", "-c", &format!("echo {i}; exit {}", i % 3)],
                );
                (i, out)
            })
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().unwrap();
        assert_eq!(out.status.code(), Some(i % 3), "p{i}: {}", ctx(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let rootfs = c.rootfs();
    assert!(
        !mounts.contains(rootfs.to_str().unwrap()),
        "a mount of the rootfs is left in the host's namespace"
    );
    for i in 0..20 {
        assert!(!Path::new("/sys/fs/cgroup/memory/default")
            .join(format!("p{i}"))
            .exists());
    }
    let left: Vec<_> = std::fs::read_dir(runtime_root(&c))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// The exit codes of a set of programs equal those under Debian's runc.
#[test]
fn exit_codes_match_runc() {
    let c = Containerd::start("diff");
    let runc = which("runc");
    let oci = warden_oci();
    let programs: &[&[&str]] = &[
        &["/bin/true"],
        &["/bin/false"],
        &["/bin/sh", "-c", "exit 3"],
        &["/bin/sh", "-c", "exit 255"],
        &["/bin/sh", "-c", "kill -TERM $$"],
        &["/bin/sh", "-c", "kill -KILL $$"],
        &["/bin/sh", "-c", "kill -SEGV $$"],
        &["/no/such/program"],
        &["/etc"],
    ];
    for (i, p) in programs.iter().enumerate() {
        let theirs = c.run(&runc, &format!("runc{i}"), &[], p);
        let ours = c.run(&oci, &format!("oci{i}"), &[], p);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{p:?}\nwarden-oci: {}\nrunc: {}",
            ctx(&ours),
            ctx(&theirs)
        );
    }
}
