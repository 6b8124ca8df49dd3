//! `warden-oci` end to end, as containerd's shim drives it: real bundles
//! (a rootfs holding mount points, the host's /usr bound read-only),
//! real namespaces and cgroups. Needs root (CI runs as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!(
            "warden-oci-it-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test's world: a runtime root, a state directory for the ledger, and
/// bundles.
struct World {
    tmp: Tmp,
}

impl World {
    fn new(tag: &str) -> World {
        World { tmp: Tmp::new(tag) }
    }

    fn root(&self) -> PathBuf {
        self.tmp.0.join("root")
    }

    /// A bundle running `args`, with `tweak` applied to its config.
    fn bundle(&self, name: &str, args: &[&str], tweak: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.tmp.0.join(name);
        let rootfs = b.join("rootfs");
        for d in ["usr", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        for l in ["bin", "lib", "lib64", "sbin"] {
            let _ = std::os::unix::fs::symlink(format!("usr/{l}"), rootfs.join(l));
        }
        let mut config = json!({
            "ociVersion": "1.2.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/bin:/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_KILL"],
                    "permitted": ["CAP_KILL"]
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "wardenbox",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                               {"type": "mount"}, {"type": "network"}],
                "resources": {"memory": {"limit": 134217728}, "pids": {"limit": 64}},
                "cgroupsPath": format!("/warden-oci-it/{name}-{}", std::process::id()),
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        tweak(&mut config);
        std::fs::write(
            b.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        b
    }

    fn oci(&self, args: &[&str]) -> Output {
        output_of(self.command(args), None)
    }

    /// [`World::oci`] with the container's stdout (the runtime's) to `stdout`.
    fn oci_to(&self, stdout: &Path, args: &[&str]) -> Output {
        output_of(self.command(args), Some(stdout))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_warden-oci"));
        c.env("WARDEN_STATE", self.tmp.0.join("state"))
            .arg("--root")
            .arg(self.root())
            .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.oci(args);
        assert!(out.status.success(), "warden-oci {args:?}: {}", ctx(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id);
            if s["status"] == want || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `c` with its output in files: a created container inherits the
/// runtime's stdio (as under runc), so pipes would stay open past its exit.
fn output_of(mut c: Command, stdout_to: Option<&Path>) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let base = std::env::temp_dir().join(format!("warden-oci-it-out-{}-{n}", std::process::id()));
    let (o, e) = (base.with_extension("out"), base.with_extension("err"));
    let status = c
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(stdout_to.unwrap_or(&o)).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .expect("run warden-oci");
    let out = Output {
        status,
        stdout: std::fs::read(&o).unwrap_or_default(),
        stderr: std::fs::read(&e).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(o);
    let _ = std::fs::remove_file(e);
    out
}

/// Receives one message with one descriptor (SCM_RIGHTS): its bytes and
/// the descriptor, owned.
fn recv_with_fd(s: &std::os::unix::net::UnixStream) -> (Vec<u8>, Option<std::os::fd::OwnedFd>) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = vec![0u8; 65536];
    let mut cmsg = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; its buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: as above; recvmsg fills the buffers.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    // SAFETY: the kernel filled the control buffer; a SCM_RIGHTS header's
    // data is the descriptor it installed here, owned by nobody else.
    let fd = unsafe {
        libc::CMSG_FIRSTHDR(&msg).as_ref().and_then(|c| {
            (c.cmsg_type == libc::SCM_RIGHTS)
                .then(|| std::os::fd::OwnedFd::from_raw_fd(*(libc::CMSG_DATA(c) as *const i32)))
        })
    };
    (buf, fd)
}

fn ctx(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn cgroup_dir(bundle: &Path) -> PathBuf {
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let rel = config["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    PathBuf::from("/sys/fs/cgroup/memory").join(rel)
}

/// create leaves the process waiting; start releases it; its output,
/// isolation and exit status are the spec's; the monitor's report and
/// ledger entry follow; delete leaves nothing.
#[test]
fn create_start_state_delete() {
    let w = World::new("life");
    let out_file = w.tmp.0.join("out");
    let probe = &r#"
echo hostname=$(hostname)
echo pid=$$
echo caps=$(grep CapBnd /proc/self/status | cut -f2)
echo nofile=$(ulimit -n)
echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)
touch /rootfs-write 2>/dev/null && echo rootfs=writable || echo rootfs=readonly
echo keys=$(wc -c < /proc/keys)
test -e /proc/HOSTPID && echo host=visible || echo host=hidden
exit 3
"#
    .replace("HOSTPID", &std::process::id().to_string());
    let b = w.bundle("life", &["/bin/sh", "-c", probe], |_| {});
    let pid_file = w.tmp.0.join("pid");
    let created = w.oci_to(
        &out_file,
        &[
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "c1",
        ],
    );
    assert!(created.status.success());
    let s = w.state("c1");
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["id"], "c1");
    assert_eq!(s["bundle"], b.to_str().unwrap());
    let pid = s["pid"].as_i64().unwrap();
    assert!(alive(pid));
    let monitor: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(monitor));
    // Nothing ran yet.
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "");
    assert!(cgroup_dir(&b).is_dir());
    let ps: Vec<i64> = serde_json::from_str(&w.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert_eq!(ps, vec![pid]);
    w.ok(&["start", "c1"]);
    let s = w.wait_status("c1", "stopped");
    assert_eq!(s["status"], "stopped", "{s}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let report = loop {
        let p = w.root().join("c1/report.json");
        if let Ok(text) = std::fs::read(&p) {
            break serde_json::from_slice::<Value>(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "no report");
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&out_file).unwrap();
    for want in [
        "hostname=wardenbox",
        "pid=1",
        "caps=0000000000000420",
        "nofile=512",
        "nnp=1",
        "rootfs=readonly",
        "keys=0",
        "host=hidden",
    ] {
        assert!(printed.lines().any(|l| l == want), "{want}\n{printed}");
    }
    assert_eq!(report["status"], "exited", "{report}");
    assert_eq!(report["exit_code"], 3, "{report}");
    assert_eq!(report["container"], "c1");
    assert!(report["audit"]["index"].is_u64(), "{report}");
    // start of a stopped container is refused; delete removes everything.
    let again = w.oci(&["start", "c1"]);
    assert_eq!(again.status.code(), Some(1), "{}", ctx(&again));
    w.ok(&["delete", "c1"]);
    assert!(!w.root().join("c1").exists());
    assert!(!cgroup_dir(&b).exists());
    let gone = w.oci(&["state", "c1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("does not exist"),
        "{}",
        ctx(&gone)
    );
}

/// The lifecycle's edges: kill before start, delete of a running
/// container without --force refused and with it everything gone, a
/// duplicate id, pause and resume, run's exit status, a memory limit.
#[test]
fn lifecycle_edges() {
    let w = World::new("edges");
    // Killed before start: stopped, deletable.
    let b = w.bundle("k", &["/bin/true"], |_| {});
    w.ok(&["create", "--bundle", b.to_str().unwrap(), "k1"]);
    let dup = w.oci(&["create", "--bundle", b.to_str().unwrap(), "k1"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already exists"),
        "{}",
        ctx(&dup)
    );
    w.ok(&["kill", "k1", "KILL"]);
    assert_eq!(w.wait_status("k1", "stopped")["status"], "stopped");
    let late = w.oci(&["kill", "k1", "TERM"]);
    assert_eq!(late.status.code(), Some(1), "{}", ctx(&late));
    // exec into a stopped container is refused.
    let exec = w.oci(&["exec", "k1", "/bin/true"]);
    assert_eq!(exec.status.code(), Some(1), "{}", ctx(&exec));
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("stopped"),
        "{}",
        ctx(&exec)
    );
    w.ok(&["delete", "k1"]);

    // Running: delete refused without --force; pause and resume.
    let b = w.bundle(
        "r",
        &["/bin/sh", "-c", "while :; do sleep 0.05; done"],
        |_| {},
    );
    w.ok(&["create", "--bundle", b.to_str().unwrap(), "r1"]);
    w.ok(&["start", "r1"]);
    let pid = w.state("r1")["pid"].as_i64().unwrap();
    assert_eq!(w.state("r1")["status"], "running");
    w.ok(&["pause", "r1"]);
    assert_eq!(w.state("r1")["status"], "paused");
    w.ok(&["resume", "r1"]);
    assert_eq!(w.state("r1")["status"], "running");
    let refused = w.oci(&["delete", "r1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not stopped: running"),
        "{}",
        ctx(&refused)
    );
    assert!(alive(pid));
    // exec in the running one: its namespaces (hostname, pid 1's view).
    let exec = w.oci(&["exec", "r1", "/bin/sh", "-c", "hostname; exit 4"]);
    assert_eq!(exec.status.code(), Some(4), "{}", ctx(&exec));
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "wardenbox");
    w.ok(&["pause", "r1"]);
    let paused = w.oci(&["exec", "r1", "/bin/true"]);
    assert_eq!(paused.status.code(), Some(1), "{}", ctx(&paused));
    w.ok(&["delete", "--force", "r1"]);
    assert!(!alive(pid));
    assert!(!w.root().join("r1").exists());
    assert!(!cgroup_dir(&b).exists());

    // run: the container's exit status, and a memory limit's kill.
    let b = w.bundle("x", &["/bin/sh", "-c", "exit 42"], |_| {});
    let out = w.oci(&["run", "--bundle", b.to_str().unwrap(), "x1"]);
    assert_eq!(out.status.code(), Some(42), "{}", ctx(&out));
    assert!(!w.root().join("x1").exists());
    let b = w.bundle(
        "m",
        &[
            "/usr/bin/python3",
            "-c",
            "b = bytearray(512 << 20); print(len(b))",
        ],
        |c| {
            c["linux"]["resources"]["memory"]["limit"] = json!(32 << 20);
            c["linux"]["resources"]["memory"]["swap"] = json!(32 << 20);
        },
    );
    let out = w.oci(&["run", "--keep", "--bundle", b.to_str().unwrap(), "m1"]);
    assert_eq!(out.status.code(), Some(137), "{}", ctx(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(w.root().join("m1/report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "oom", "{report}");
    assert_eq!(report["signal"], 9, "{report}");
    w.ok(&["delete", "m1"]);
}

/// A malformed config.json: each bad field named, exit 1, nothing made.
#[test]
fn malformed_configs_name_the_field_and_leave_nothing() {
    let w = World::new("bad");
    type Tweak = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Tweak)> = vec![
        (
            "linux.namespaces[1].type",
            Box::new(|c| c["linux"]["namespaces"][1]["type"] = json!("bogus")),
        ),
        (
            "process.args",
            Box::new(|c| c["process"]["args"] = json!([])),
        ),
        (
            "process.user.uid",
            Box::new(|c| c["process"]["user"]["uid"] = json!(-1)),
        ),
        (
            "mounts[0].destination",
            Box::new(|c| c["mounts"][0]["destination"] = json!("proc")),
        ),
        ("process.cwd", Box::new(|c| c["process"]["cwd"] = json!(7))),
        (
            "root.path",
            Box::new(|c| c["root"]["path"] = json!("missing-dir")),
        ),
        (
            "executable file not found",
            Box::new(|c| c["process"]["args"] = json!(["no-such-program"])),
        ),
        (
            "linux.cgroupsPath",
            Box::new(|c| c["linux"]["cgroupsPath"] = json!("/warden-oci-it/../../../tmp/escape")),
        ),
        (
            "linux.resources.hugepageLimits",
            Box::new(|c| {
                c["linux"]["resources"]["hugepageLimits"] =
                    json!([{"pageSize": "../../x", "limit": 1}])
            }),
        ),
        (
            "linux.resources.devices",
            Box::new(|c| {
                c["linux"]["resources"]["devices"] =
                    json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}])
            }),
        ),
    ];
    for (i, (named, tweak)) in cases.into_iter().enumerate() {
        let name = format!("bad{i}");
        let b = w.bundle(&name, &["/bin/true"], tweak);
        let out = w.oci(&["create", "--bundle", b.to_str().unwrap(), &name]);
        assert_eq!(out.status.code(), Some(1), "{named}: {}", ctx(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{named}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!w.root().join(&name).exists(), "{named}: state left");
        assert!(!cgroup_dir(&b).exists(), "{named}: cgroup left");
    }
    let log = w.tmp.0.join("log.json");
    let b = w.bundle("logged", &["/bin/true"], |c| {
        c["process"]["args"] = json!([])
    });
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden-oci"));
    c.arg("--root")
        .arg(w.root())
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(&b)
        .arg("logged");
    let out = output_of(c, None);
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("process.args"),
        "{line}"
    );
    for bad in [
        &["state", "../x"][..],
        &["start"][..],
        &["kill", "nobody", "NOSIG"][..],
        &["frobnicate"][..],
    ] {
        let out = w.oci(bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", ctx(&out));
    }
}

/// Hooks run where and when the runtime-spec says, with the state on
/// their stdin; a failing createRuntime hook fails create, naming it,
/// and leaves nothing.
#[test]
fn hooks_run_at_their_points_with_the_state() {
    let w = World::new("hooks");
    let out = w.tmp.0.join("hooks-out");
    std::fs::create_dir_all(&out).unwrap();
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out.display())]});
    let b = w.bundle(
        "h",
        &["/bin/sh", "-c", "cat /tmp/started.json"],
        |c| {
            c["hooks"] = json!({
                "createRuntime": [hook("createRuntime")],
                "createContainer": [hook("createContainer")],
                "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/started.json"]}],
                "poststart": [hook("poststart")],
                "poststop": [hook("poststop")],
            });
        },
    );
    let stdout = w.tmp.0.join("h.out");
    let created = w.oci_to(&stdout, &["create", "--bundle", b.to_str().unwrap(), "h1"]);
    assert!(created.status.success());
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let pid = w.state("h1")["pid"].as_i64().unwrap();
    for (name, status) in [
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
    ] {
        let st = read(name);
        assert_eq!(st["id"], "h1", "{name}: {st}");
        assert_eq!(st["status"], status, "{name}: {st}");
        assert_eq!(st["pid"], pid, "{name}: {st}");
        assert_eq!(st["bundle"], b.to_str().unwrap(), "{name}: {st}");
    }
    assert!(!out.join("poststart.json").exists());
    w.ok(&["start", "h1"]);
    assert_eq!(read("poststart")["status"], "running");
    w.wait_status("h1", "stopped");
    // startContainer ran inside the container (its /tmp), before the program.
    let printed: Value = serde_json::from_slice(&std::fs::read(&stdout).unwrap()).unwrap();
    assert_eq!(printed["id"], "h1", "{printed}");
    w.ok(&["delete", "h1"]);
    assert_eq!(read("poststop")["status"], "stopped");

    let b = w.bundle("hf", &["/bin/true"], |c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    let failed = w.oci(&["create", "--bundle", b.to_str().unwrap(), "hf1"]);
    assert_eq!(failed.status.code(), Some(1), "{}", ctx(&failed));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("createRuntime hook 0 (/bin/false)"), "{err}");
    assert!(!w.root().join("hf1").exists());
    assert!(!cgroup_dir(&b).exists());
}

/// `linux.seccomp`: the OCI JSON profile is enforced — an errno rule, a
/// kill rule, argument conditions, and a notify rule whose listener goes
/// to `listenerPath` with the container's state.
#[test]
fn seccomp_profiles_are_enforced_and_listeners_handed_over() {
    use std::os::unix::net::UnixListener;
    let w = World::new("seccomp");
    let sock = w.tmp.0.join("agent.sock");
    let agent = UnixListener::bind(&sock).unwrap();
    let got = std::thread::spawn(move || {
        let (s, _) = agent.accept().unwrap();
        let (bytes, fd) = recv_with_fd(&s);
        let message: Value = serde_json::from_slice(&bytes).unwrap();
        // Closing the listener answers the pending call with ENOSYS.
        let had_fd = fd.is_some();
        drop(fd);
        (message, had_fd)
    });
    let out_file = w.tmp.0.join("sc.out");
    let b = w.bundle(
        "sc",
        &[
            "/bin/sh",
            "-c",
            "mkdir /tmp/d 2>/dev/null && echo mkdir=ok || echo mkdir=refused; \
             /usr/bin/python3 -c 'import os; os.umask(0o22); print(\"umask=ok\")'; echo umask-rc=$?; \
             /usr/bin/python3 -c 'import os; os.umask(0o77)'; echo umask77-rc=$?; \
             uname >/dev/null 2>&1; echo uname-rc=$?",
        ],
        |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "listenerPath": sock,
                "listenerMetadata": "meta-1",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                    {"names": ["umask"], "action": "SCMP_ACT_KILL_PROCESS",
                     "args": [{"index": 0, "value": 63, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["uname"], "action": "SCMP_ACT_NOTIFY"}
                ]
            });
        },
    );
    let ran = w.oci_to(&out_file, &["run", "--bundle", b.to_str().unwrap(), "sc1"]);
    let (status, err) = (ran.status, String::from_utf8_lossy(&ran.stderr));
    assert!(status.success(), "{status:?}: {err}");
    let printed = std::fs::read_to_string(&out_file).unwrap();
    for want in ["mkdir=refused", "umask=ok", "umask-rc=0", "umask77-rc=159"] {
        assert!(printed.lines().any(|l| l == want), "{want}\n{printed}");
    }
    // uname was sent to the agent, which answered by going away (ENOSYS).
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("uname-rc=") && l != "uname-rc=0"),
        "{printed}"
    );
    let (message, had_fd) = got.join().unwrap();
    assert!(had_fd, "{message}");
    assert_eq!(message["metadata"], "meta-1", "{message}");
    assert_eq!(message["fds"], json!(["seccompFd"]), "{message}");
    assert_eq!(message["state"]["id"], "sc1", "{message}");
}

/// `process.terminal` with `--console-socket`: the container gets a new
/// terminal of its devpts as its controlling terminal and stdio; the master
/// and its name go to the socket.
#[test]
fn a_terminal_goes_to_the_console_socket() {
    use std::io::Read as _;
    use std::os::unix::net::UnixListener;
    let w = World::new("tty");
    let sock = w.tmp.0.join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let (name, fd) = recv_with_fd(&s);
        let mut master = std::fs::File::from(fd.expect("the terminal's master"));
        let mut out = Vec::new();
        // Reading ends with EIO once the last slave is closed.
        let _ = master.read_to_end(&mut out);
        (
            String::from_utf8_lossy(&name).into_owned(),
            String::from_utf8_lossy(&out).into_owned(),
        )
    });
    let b = w.bundle(
        "t",
        &[
            "/bin/sh",
            "-c",
            "tty; test -t 0 && echo stdin-is-a-tty; exit 5",
        ],
        |c| {
            c["process"]["terminal"] = json!(true);
        },
    );
    let out = w.oci(&[
        "run",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b.to_str().unwrap(),
        "t1",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", ctx(&out));
    let (name, printed) = reader.join().unwrap();
    assert_eq!(name, "/dev/pts/0");
    assert!(
        printed.contains("/dev/pts/0") && printed.contains("stdin-is-a-tty"),
        "{printed:?}"
    );
    // A terminal asked for without a socket, or a socket without one: refused.
    let b2 = w.bundle("t2", &["/bin/true"], |c| {
        c["process"]["terminal"] = json!(true)
    });
    let refused = w.oci(&["create", "--bundle", b2.to_str().unwrap(), "t2"]);
    assert_eq!(refused.status.code(), Some(1), "{}", ctx(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--console-socket"),
        "{}",
        ctx(&refused)
    );
    assert!(!w.root().join("t2").exists());
}

/// The devices controller holds what the spec does not allow, even for a
/// process that may make device nodes: a node made for /dev/fuse cannot
/// be opened until a rule allows it; the devices every container has
/// still work.
#[test]
fn device_rules_hold_against_mknod() {
    let w = World::new("devices");
    let probe = r#"
mknod /dev/probe c 10 229 || exit 9
( : </dev/probe ) 2>/dev/null && echo fuse=open || echo fuse=denied
echo x > /dev/null && echo null=ok
"#;
    for (name, rules, want) in [
        (
            "deny",
            json!([{"allow": false, "access": "rwm"}]),
            "fuse=denied",
        ),
        ("none", json!([]), "fuse=denied"),
        (
            "allow",
            json!([{"allow": false, "access": "rwm"},
                   {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}]),
            "fuse=open",
        ),
    ] {
        let b = w.bundle(name, &["/bin/sh", "-c", probe], |c| {
            c["root"]["readonly"] = json!(false);
            c["process"]["capabilities"] = json!({
                "bounding": ["CAP_MKNOD", "CAP_DAC_OVERRIDE"],
                "effective": ["CAP_MKNOD", "CAP_DAC_OVERRIDE"],
                "permitted": ["CAP_MKNOD", "CAP_DAC_OVERRIDE"]
            });
            c["linux"]["resources"]["devices"] = rules;
        });
        let out_file = w.tmp.0.join(format!("{name}.out"));
        let run = w.oci_to(&out_file, &["run", "--bundle", b.to_str().unwrap(), name]);
        let printed = std::fs::read_to_string(&out_file).unwrap();
        assert_eq!(
            run.status.code(),
            Some(0),
            "{name}: {}\n{printed}",
            ctx(&run)
        );
        assert!(
            printed.lines().any(|l| l == want),
            "{name}: {want}\n{printed}"
        );
        assert!(printed.lines().any(|l| l == "null=ok"), "{name}: {printed}");
        let _ = w.oci(&["delete", "--force", name]);
    }
    // `update` of another resource leaves the device rules as they were.
    let b = w.bundle("upd", &["/bin/sleep", "30"], |c| {
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}
        ]);
    });
    w.ok(&["create", "--bundle", b.to_str().unwrap(), "upd"]);
    let rel = cgroup_dir(&b);
    let rel = rel.strip_prefix("/sys/fs/cgroup/memory").unwrap();
    let list = Path::new("/sys/fs/cgroup/devices")
        .join(rel)
        .join("devices.list");
    let before = std::fs::read_to_string(&list).unwrap();
    assert!(before.lines().any(|l| l == "c 10:229 rw"), "{before}");
    assert!(!before.lines().any(|l| l.starts_with("a ")), "{before}");
    w.ok(&["update", "--memory", "100000000", "upd"]);
    assert_eq!(std::fs::read_to_string(&list).unwrap(), before);
    w.ok(&["delete", "--force", "upd"]);
}

/// `linux.rootfsPropagation`: a shared root passes a later mount to its
/// bound copy, a private one does not, an unbindable one cannot be bound
/// (and each can still be pivoted into).
#[test]
fn rootfs_propagation_is_the_spec_s() {
    let w = World::new("propagation");
    let probe = r#"
mkdir -p /t /m /s && touch /s/f
mount --rbind / /t 2>/dev/null || { echo root=unbindable; exit 0; }
mount --bind /s /m
test -e /t/m/f && echo root=shared || echo root=private
"#;
    for (mode, want) in [
        ("shared", "root=shared"),
        ("private", "root=private"),
        ("slave", "root=private"),
        ("unbindable", "root=unbindable"),
    ] {
        let b = w.bundle(mode, &["/bin/sh", "-c", probe], |c| {
            c["root"]["readonly"] = json!(false);
            c["process"]["capabilities"] = json!({
                "bounding": ["CAP_SYS_ADMIN"],
                "effective": ["CAP_SYS_ADMIN"],
                "permitted": ["CAP_SYS_ADMIN"]
            });
            c["process"]["noNewPrivileges"] = json!(false);
            c["linux"]["rootfsPropagation"] = json!(mode);
        });
        let out_file = w.tmp.0.join(format!("{mode}.out"));
        let run = w.oci_to(&out_file, &["run", "--bundle", b.to_str().unwrap(), mode]);
        let printed = std::fs::read_to_string(&out_file).unwrap();
        assert_eq!(
            run.status.code(),
            Some(0),
            "{mode}: {}\n{printed}",
            ctx(&run)
        );
        assert!(
            printed.lines().any(|l| l == want),
            "{mode}: {want}\n{printed}"
        );
    }
}

/// A mount namespace joined by path gets the container's root set up in
/// it, as a new one does: the program runs from the bundle's rootfs in
/// the namespace named.
#[test]
fn a_joined_mount_namespace_gets_the_rootfs() {
    let w = World::new("joinmnt");
    let mut holder = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "sleep",
            "60",
        ])
        .spawn()
        .expect("unshare (util-linux)");
    let ns = format!("/proc/{}/ns/mnt", holder.id());
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(&ns).ok().as_ref() == Some(&ours) {
        assert!(
            Instant::now() < deadline,
            "unshare did not make a namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let theirs = std::fs::read_link(&ns).unwrap();
    let b = w.bundle(
        "j",
        &[
            "/bin/sh",
            "-c",
            "readlink /proc/self/ns/mnt; test -e /rootfs-mark && echo root=bundle",
        ],
        |c| {
            c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                          {"type": "mount", "path": ns}, {"type": "network"}]);
        },
    );
    std::fs::write(b.join("rootfs/rootfs-mark"), "").unwrap();
    let out_file = w.tmp.0.join("j.out");
    let run = w.oci_to(&out_file, &["run", "--bundle", b.to_str().unwrap(), "j1"]);
    let printed = std::fs::read_to_string(&out_file).unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.status.code(), Some(0), "{}\n{printed}", ctx(&run));
    assert!(printed.lines().any(|l| l == "root=bundle"), "{printed}");
    assert!(
        printed.lines().any(|l| Path::new(l) == theirs),
        "{printed} (want {})",
        theirs.display()
    );
}

/// `--preserve-fds N`: descriptors 3..3+N reach the program; any other
/// the runtime inherited without close-on-exec does not.
#[test]
fn preserved_descriptors_pass_and_others_do_not() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let w = World::new("fds");
    let given = w.tmp.0.join("given");
    std::fs::write(&given, "through fd 3\n").unwrap();
    let passed = std::fs::File::open(&given).unwrap();
    let stray = std::fs::File::open(&given).unwrap();
    let (p, s) = (passed.as_raw_fd(), stray.as_raw_fd());
    let probe = "cat <&3; test -e /proc/self/fd/4 && echo fd4=leaked || echo fd4=closed";
    for (preserve, want_cat) in [("1", true), ("0", false)] {
        let name = format!("fds{preserve}");
        // A profile that refuses close_range: descriptors are settled
        // before it is installed.
        let b = w.bundle(&name, &["/bin/sh", "-c", probe], |c| {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            });
        });
        let mut c = w.command(&[
            "run",
            "--preserve-fds",
            preserve,
            "--bundle",
            b.to_str().unwrap(),
            &name,
        ]);
        // SAFETY: between fork and exec only fcntl and dup2 run
        // (async-signal-safe);
        // fds 3 and 4 are left without close-on-exec, as a careless
        // caller would leave them.
        unsafe {
            c.pre_exec(move || {
                // Copies above 10 first: p or s may already be 3 or 4.
                let (a, b) = (
                    libc::fcntl(p, libc::F_DUPFD, 10),
                    libc::fcntl(s, libc::F_DUPFD, 10),
                );
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out_file = w.tmp.0.join(format!("{name}.out"));
        let run = output_of(c, Some(&out_file));
        let printed = std::fs::read_to_string(&out_file).unwrap();
        assert!(
            printed.lines().any(|l| l == "fd4=closed"),
            "{preserve}: {printed}"
        );
        assert_eq!(
            printed.lines().any(|l| l == "through fd 3"),
            want_cat,
            "{preserve}: {printed} {}",
            ctx(&run)
        );
    }
}
