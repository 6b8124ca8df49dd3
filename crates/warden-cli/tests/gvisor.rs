//! The gVisor backend (`--backend gvisor`, or a policy's `isolation:
//! strong`): real runs under runsc, with the jail's report, exit statuses,
//! grants and limits, and the red-team checks of a stronger boundary (the
//! program's system calls reach gVisor's kernel, not the host's; no host
//! loopback; nothing of the host in /proc). Needs root and runsc
//! (scripts/setup.sh installs it); a missing runsc fails, never skips.

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::TempDir;

fn gvisor(dir: &TempDir, args: &[&str]) -> common::Outcome {
    let mut all = vec!["--backend", "gvisor"];
    all.extend_from_slice(args);
    dir.run(all).go()
}

#[test]
fn exit_statuses_signals_and_errors_are_the_jails() {
    let t = TempDir::new("gvisor-status");
    let out = gvisor(&t, &["--", "/bin/sh", "-c", "echo hello; exit 3"]);
    out.expect_code(3, "exit 3")
        .expect_status("exited", "exit 3")
        .expect_stdout_has("hello", "exit 3");
    assert_eq!(out.report()["backend"], "gvisor", "{}", out.ctx());
    assert_eq!(out.report()["routing"], "--backend gvisor", "{}", out.ctx());
    // runsc itself says 137 for both: Warden's init tells them apart.
    let out = gvisor(&t, &["--", "/bin/sh", "-c", "kill -9 $$"]);
    out.expect_code(137, "SIGKILL")
        .expect_status("signaled", "SIGKILL");
    assert_eq!(out.report()["signal"], 9, "{}", out.ctx());
    let out = gvisor(&t, &["--", "/bin/sh", "-c", "exit 137"]);
    out.expect_code(137, "exit 137")
        .expect_status("exited", "exit 137");
    assert_eq!(out.report()["exit_code"], 137, "{}", out.ctx());
    let out = gvisor(&t, &["--", "no-such-command"]);
    out.expect_code(127, "missing command")
        .expect_status("error", "missing command");
    let error = out.report()["error"].as_str().unwrap_or("").to_owned();
    assert!(error.contains("command not found"), "{}", out.ctx());
    // The same with the program as the sandbox's first process (a working
    // directory the rootfs holds: no init goes first).
    for workdir in ["/tmp", "/"] {
        let out = gvisor(
            &t,
            &["--workdir", workdir, "--", "/bin/sh", "-c", "kill -9 $$"],
        );
        out.expect_code(137, "SIGKILL, direct")
            .expect_status("signaled", "SIGKILL, direct");
        let out = gvisor(
            &t,
            &["--workdir", workdir, "--", "/bin/sh", "-c", "pwd; exit 137"],
        );
        out.expect_code(137, "exit 137, direct")
            .expect_status("exited", "exit 137, direct")
            .expect_stdout_has(workdir, "working directory");
        let out = gvisor(&t, &["--workdir", workdir, "--", "no-such-command"]);
        out.expect_code(127, "missing command, direct")
            .expect_status("error", "missing command, direct");
        let out = gvisor(&t, &["--workdir", workdir, "--", "/etc/passwd"]);
        out.expect_code(126, "not executable, direct")
            .expect_status("error", "not executable, direct");
    }
    // Standard input reaches the program; its output comes back.
    let out = t
        .run(["--backend", "gvisor", "--", "/bin/cat"])
        .stdin("through gVisor\n")
        .go();
    out.expect_ok("cat")
        .expect_stdout_has("through gVisor", "cat");
}

#[test]
fn grants_are_the_only_host_paths_and_writes_land_as_the_owner() {
    let t = TempDir::new("gvisor-grants");
    let data = t.mkdir("data");
    std::fs::write(data.join("in.txt"), "granted data\n").unwrap();
    let secret = t.write_root("not-granted.txt", "host secret\n");
    let out_dir = t.mkdir("out");
    let script = format!(
        "cat {data}/in.txt; cat {secret} 2>/dev/null && echo LEAK; echo x > {data}/new 2>/dev/null && echo WROTE-RO; \
         echo result > {out}/made; mkdir {out}/sub && echo deep > {out}/sub/f; cat /etc/shadow 2>/dev/null && echo SHADOW; echo done",
        data = data.display(),
        secret = secret.display(),
        out = out_dir.display(),
    );
    let read = format!("fs:read:{}", data.display());
    let write = format!("fs:write:{}", out_dir.display());
    let out = gvisor(
        &t,
        &[
            "--allow", &read, "--allow", &write, "--", "/bin/sh", "-c", &script,
        ],
    );
    out.expect_ok("grants")
        .expect_stdout_has("granted data", "read grant")
        .expect_stdout_has("done", "script ran to the end")
        .expect_stdout_lacks("LEAK", "an ungranted file")
        .expect_stdout_lacks("WROTE-RO", "a read-only grant")
        .expect_stdout_lacks("SHADOW", "the host's /etc/shadow");
    assert!(!data.join("new").exists());
    let made = out_dir.join("made");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "result\n");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("sub/f")).unwrap(),
        "deep\n"
    );
    // Created through the idmapped grant: owned by the directory's owner,
    // never by a sandbox id.
    let owner = std::fs::metadata(&out_dir).unwrap().uid();
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), owner);
    assert_eq!(std::fs::metadata(out_dir.join("sub")).unwrap().uid(), owner);
}

#[test]
fn limits_hold_and_are_reported() {
    let t = TempDir::new("gvisor-limits");
    let out = gvisor(&t, &["--wall-time", "1s", "--", "/bin/sleep", "10"]);
    out.expect_code(124, "wall time")
        .expect_status("timeout", "wall time");
    assert!(out.elapsed < Duration::from_secs(8), "{}", out.ctx());

    let hog = "x = bytearray(400 << 20); print(len(x))";
    let out = gvisor(&t, &["--memory", "128MiB", "--", "python3", "-c", hog]);
    out.expect_status("memory_limit", "memory")
        .expect_stdout_lacks("419430400", "memory");
    let limits: Vec<String> = out.report()["limits_reached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["limit"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(limits.contains(&"memory".to_string()), "{}", out.ctx());

    let out = gvisor(
        &t,
        &[
            "--output-limit",
            "1KiB",
            "--",
            "/bin/sh",
            "-c",
            "yes | head -c 100000",
        ],
    );
    out.expect_status("output_limit", "output");
    assert!(out.stdout.len() <= 1024, "{}", out.ctx());

    // The Sentry holds RLIMIT_NPROC for the sandbox user: forks stop at
    // the pids limit (the program itself is one of them).
    let forker = "import os, time\nn = 0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('refused after', n)\n";
    let out = gvisor(&t, &["--pids", "10", "--", "python3", "-c", forker]);
    out.expect_ok("pids")
        .expect_stdout_has("refused after", "pids");
    let n: u32 = out
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(999);
    assert!(n < 10, "{n} forks under --pids 10\n{}", out.ctx());

    let out = gvisor(
        &t,
        &[
            "--cpu-time",
            "1s",
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
    );
    out.expect_status("cpu_limit", "cpu time");
}

#[test]
fn the_program_meets_gvisors_kernel_not_the_hosts() {
    let t = TempDir::new("gvisor-redteam");
    // A server on the host's loopback: the sandbox has a loopback of its
    // own, and no other network.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        r#"
import os, socket, json
out = {{}}
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", {port})); out["loopback"] = "connected"
except OSError as e:
    out["loopback"] = "refused"
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); out["internet"] = "connected"
except OSError:
    out["internet"] = "refused"
out["release"] = os.uname().release
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out["init"] = open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode()
status = open("/proc/self/status").read()
out["caps"] = [l.split()[1] for l in status.splitlines() if l.startswith(("CapEff", "CapBnd", "CapPrm"))]
import ctypes
out["nnp"] = ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)  # PR_GET_NO_NEW_PRIVS
out["uid"] = os.getuid()
print(json.dumps(out))
"#
    );
    let out = gvisor(&t, &["--", "python3", "-c", &probe]);
    out.expect_ok("probe");
    let seen: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", out.ctx()));
    assert_eq!(seen["loopback"], "refused", "{}", out.ctx());
    assert_eq!(seen["internet"], "refused", "{}", out.ctx());
    let mut buf = [0u8; 1];
    match listener.accept() {
        Ok((mut s, _)) => panic!(
            "the host's loopback was reached: {:?}\n{}",
            s.read(&mut buf),
            out.ctx()
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    // uname answers from the Sentry, not the host's kernel.
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(seen["release"], host_release.trim(), "{}", out.ctx());
    // /proc holds the sandbox's few processes (Warden's init is PID 1),
    // none of the host's.
    let pids = seen["pids"].as_array().unwrap();
    assert!(pids.len() <= 4, "{}", out.ctx());
    assert!(
        !pids.contains(&serde_json::json!(std::process::id())),
        "{}",
        out.ctx()
    );
    // The program itself is PID 1 (Warden's init, when it went first to
    // make the working directory, exec'd the program in its place).
    assert_eq!(seen["init"], "python3", "{}", out.ctx());
    assert_eq!(seen["uid"], 1000, "{}", out.ctx());
    for cap in seen["caps"].as_array().unwrap() {
        assert_eq!(cap, "0000000000000000", "{}", out.ctx());
    }
    assert_eq!(seen["nnp"], 1, "{}", out.ctx());
}

/// Egress under gVisor is served by listening on each granted address and
/// port, or on `::` at the port of a wildcard TCP grant (tests/egress.rs
/// runs it end to end); grants no listener can serve (any port, UDP to a
/// wildcard host) are refused before anything runs, naming the grant.
#[test]
fn egress_grants_a_listener_cannot_serve_are_refused_under_gvisor() {
    let t = TempDir::new("gvisor-egress");
    for grant in [
        "net:connect:*:*",
        "net:connect:api.example.com:*",
        "net:connect:udp:*:53",
        "net:connect:udp:*.example.com:123",
    ] {
        let out = gvisor(&t, &["--allow", grant, "--", "/bin/true"]);
        out.expect_code(125, grant);
        assert!(
            out.stderr.contains("gvisor backend") && out.stderr.contains(grant),
            "{}",
            out.ctx()
        );
    }
}

#[test]
fn isolation_strong_routes_to_gvisor_and_refuses_weaker_backends() {
    let t = TempDir::new("gvisor-route");
    let policy = t.write_root("strong.yaml", "grants: []\nisolation: strong\n");
    let policy = policy.display().to_string();
    let out = t
        .run(["--policy", &policy, "--", "/bin/sh", "-c", "uname -r"])
        .go();
    out.expect_ok("strong policy");
    assert_eq!(out.report()["backend"], "gvisor", "{}", out.ctx());
    let routing = out.report()["routing"].as_str().unwrap_or("").to_owned();
    assert!(
        routing.contains("isolation: strong") && routing.contains("gvisor"),
        "{}",
        out.ctx()
    );
    // --explain says so and runs nothing.
    let marker = t.path("ran");
    let touch = format!("touch {}", marker.display());
    let out = t
        .raw([
            "run",
            "--explain",
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            &touch,
        ])
        .go();
    out.expect_code(0, "explain");
    assert!(out.stdout.contains("backend: gvisor"), "{}", out.ctx());
    assert!(out.stdout.contains("isolation: strong"), "{}", out.ctx());
    assert!(!marker.exists());
    // A weaker backend asked for explicitly is refused, naming both.
    for backend in ["jail", "wasm"] {
        let out = t
            .raw([
                "run",
                "--policy",
                &policy,
                "--backend",
                backend,
                "--",
                "/bin/true",
            ])
            .go();
        out.expect_warden_error(backend);
        assert!(
            out.stderr.contains(&format!("--backend {backend}"))
                && out.stderr.contains("isolation: strong"),
            "{}",
            out.ctx()
        );
    }
    // isolation: wasm runs modules only.
    let wasm_only = t.write_root("wasm.yaml", "grants: []\nisolation: wasm\n");
    let out = t
        .raw([
            "run",
            "--policy",
            &wasm_only.display().to_string(),
            "--",
            "/bin/true",
        ])
        .go();
    out.expect_warden_error("isolation wasm");
    assert!(
        out.stderr.contains("not a WebAssembly module"),
        "{}",
        out.ctx()
    );
}

#[test]
fn a_gvisor_run_leaves_its_ledger_entry_and_no_run_directory() {
    let t = TempDir::new("gvisor-ledger");
    let state = t.root.join("state");
    let state = state.display().to_string();
    let out = t
        .raw([
            "--state",
            &state,
            "run",
            "--backend",
            "gvisor",
            "--report",
            &t.report_path().display().to_string(),
            "--",
            "/bin/true",
        ])
        .go();
    out.expect_code(0, "run");
    let id = t.report_json()["invocation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = t.raw(["--state", &state, "audit", "log"]).go();
    let entry = log
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no ledger entry for {id}\n{}", log.ctx()));
    assert!(entry.contains("\"backend\":\"gvisor\""), "{entry}");
    let verify = t.raw(["--state", &state, "audit", "verify"]).go();
    verify.expect_code(0, "audit verify");
    // The run directory (bundle, runsc state) is gone with the run.
    let leftovers: Vec<_> = std::fs::read_dir("/run/warden/gvisor")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(&id))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_leased_secret_is_a_memory_file_in_gvisor_and_redacted_outside() {
    const VALUE: &str = "gvisor-Very/Secret+Value";
    let t = TempDir::new("gvisor-secret");
    let state = t.root.join("state").display().to_string();
    t.raw(["secret", "put", "api-token"])
        .env("WARDEN_STATE", &state)
        .stdin(VALUE)
        .go()
        .expect_code(0, "put");
    let script = r#"
import os
v = open('/run/secrets/api-token').read()
st = os.stat('/run/secrets/api-token')
print('mode', oct(st.st_mode & 0o777), 'uid', st.st_uid, 'len', len(v))
print('exact', v)
print('env', os.environ.get('SECRET_API_TOKEN'))
try:
    open('/run/secrets/api-token', 'w').write('x'); print('WROTE')
except OSError as e:
    print('readonly', e.errno)
"#;
    let out = t
        .run([
            "--backend",
            "gvisor",
            "--allow",
            "secret:api-token:env",
            "--",
            "python3",
            "-c",
            script,
        ])
        .env("WARDEN_STATE", &state)
        .go();
    out.expect_ok("secret under gvisor")
        .expect_stdout_has("mode 0o400 uid 1000 len 24", "secret file")
        .expect_stdout_has("exact [REDACTED:api-token]", "redacted read")
        .expect_stdout_has("env [REDACTED:api-token]", "redacted env")
        .expect_stdout_has("readonly", "read-only secret")
        .expect_stdout_lacks(VALUE, "the value itself");
    assert!(!out.report_text.clone().unwrap_or_default().contains(VALUE));
}

#[test]
fn a_processor_runs_under_gvisor_when_the_policy_asks_strong_isolation() {
    let t = TempDir::new("gvisor-processor");
    let state = t.root.join("state").display().to_string();
    let dir = t.mkdir("hello");
    std::fs::write(
        dir.join("processor.yaml"),
        "name: hello\nversion: 1.0.0\nkind: script\nlanguage: sh\nentry: main.sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("main.sh"), "echo \"kernel $(uname -r) from $0\"\n").unwrap();
    let policy = t.write_root("strong.yaml", "grants: []\nisolation: strong\n");
    t.raw([
        "--state",
        &state,
        "processor",
        "add",
        &dir.display().to_string(),
    ])
    .go()
    .expect_code(0, "processor add");
    let report = t.root.join("invoke.json").display().to_string();
    let out = t
        .raw([
            "--state",
            &state,
            "invoke",
            "hello@1.0.0",
            "--policy",
            &policy.display().to_string(),
            "--report",
            &report,
        ])
        .go();
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    out.expect_code(0, "invoke under strong isolation")
        .expect_stdout_has("from /processor/main.sh", "the processor's code")
        .expect_stdout_lacks(host_release.trim(), "the host's kernel");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["backend"], "gvisor", "{}", out.ctx());
    let routing = r["routing"].as_str().unwrap_or("");
    assert!(
        routing.contains("processor kind script") && routing.contains("isolation: strong"),
        "{routing}"
    );
    // --explain says the same and runs nothing.
    let out = t
        .raw([
            "--state",
            &state,
            "invoke",
            "hello@1.0.0",
            "--explain",
            "--policy",
            &policy.display().to_string(),
        ])
        .go();
    out.expect_code(0, "invoke --explain");
    assert!(out.stdout.contains("backend: gvisor"), "{}", out.ctx());
    assert!(out.stdout.contains("isolation: strong"), "{}", out.ctx());
}

/// Started by an ordinary user (uid 65534 through setpriv), the gVisor
/// backend runs rootless: runsc `--rootless` under a user namespace of the
/// shim's own, grants opened there, limits as the Sentry's rlimits. The
/// program meets gVisor's kernel, is the sandbox's uid 0 with no
/// capabilities, writes land as the user, a read-only grant stays so,
/// the host's loopback is out of reach, a stopped run leaves no process,
/// and network grants (which need root) are refused naming why.
#[test]
fn an_ordinary_user_runs_gvisor_rootless() {
    const NOBODY: u32 = 65534;
    let t = TempDir::new("gvisor-rootless");
    t.open_to_everyone();
    let bin = t.private_warden();
    let rw = t.mkdir("rw");
    std::os::unix::fs::chown(&rw, Some(NOBODY), Some(NOBODY)).unwrap();
    let ro = t.mkdir("ro");
    std::fs::write(ro.join("data"), "granted\n").unwrap();
    std::os::unix::fs::chown(&ro, Some(NOBODY), Some(NOBODY)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        r#"
import os, socket, json
out = {{"uid": os.getuid(), "release": os.uname().release}}
out["read"] = open("{ro}/data").read().strip()
try:
    open("{ro}/new", "w").write("x"); out["ro_write"] = "written"
except OSError as e:
    out["ro_write"] = e.errno
open("{rw}/made", "w").write("made")
status = open("/proc/self/status").read()
out["caps"] = sorted({{l.split()[1] for l in status.splitlines() if l.startswith(("CapEff", "CapBnd", "CapPrm"))}})
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2); out["loopback"] = "connected"
except OSError:
    out["loopback"] = "refused"
print(json.dumps(out))
raise SystemExit(7)
"#,
        ro = ro.display(),
        rw = rw.display(),
    );
    let rw_grant = format!("fs:write:{}", rw.display());
    let ro_grant = format!("fs:read:{}", ro.display());
    let out = t
        .run([
            "--backend",
            "gvisor",
            "--allow",
            &rw_grant,
            "--allow",
            &ro_grant,
            "--memory",
            "256MiB",
            "--",
            "python3",
            "-c",
            &probe,
        ])
        .bin(bin.clone())
        .user(NOBODY)
        .go();
    assert_eq!(out.code, 7, "{}", out.ctx());
    let seen: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", out.ctx()));
    assert_eq!(seen["uid"], 0, "{}", out.ctx());
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(seen["release"], host_release.trim(), "{}", out.ctx());
    assert_eq!(seen["read"], "granted", "{}", out.ctx());
    assert_eq!(seen["ro_write"], libc::EROFS, "{}", out.ctx());
    assert_eq!(
        seen["caps"],
        serde_json::json!(["0000000000000000"]),
        "{}",
        out.ctx()
    );
    assert_eq!(seen["loopback"], "refused", "{}", out.ctx());
    assert!(
        listener.accept().is_err(),
        "the host's loopback was reached"
    );
    assert_eq!(std::fs::metadata(rw.join("made")).unwrap().uid(), NOBODY);
    assert!(!ro.join("new").exists());
    let r = out.report();
    assert_eq!(r["backend"], "gvisor", "{}", out.ctx());
    assert_eq!(r["status"], "exited", "{}", out.ctx());
    assert_eq!(
        r["enforcement"]["memory"],
        "gvisor_rlimit_as",
        "{}",
        out.ctx()
    );
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("gvisor rootless")),
        "{}",
        out.ctx()
    );

    // A run stopped at its wall time leaves nothing of the sandbox running.
    let stopped = t
        .run([
            "--backend",
            "gvisor",
            "--wall-time",
            "2s",
            "--",
            "/bin/sleep",
            "60",
        ])
        .bin(bin.clone())
        .user(NOBODY)
        .go();
    assert_eq!(stopped.report()["status"], "timeout", "{}", stopped.ctx());
    assert!(
        stopped.elapsed < Duration::from_secs(20),
        "{}",
        stopped.ctx()
    );
    std::thread::sleep(Duration::from_millis(300));
    // runsc and the sandbox carry the run's name, which holds its id.
    let id = stopped.report()["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!id.is_empty(), "{}", stopped.ctx());
    let left = std::process::Command::new("pgrep")
        .args(["-f", &id])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "runsc processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );

    // Network grants need root under gVisor: refused before anything runs.
    let net = t
        .run([
            "--backend",
            "gvisor",
            "--allow",
            "net:connect:api.example.com:443",
            "--",
            "/bin/true",
        ])
        .bin(bin)
        .user(NOBODY)
        .go();
    assert_eq!(net.code, 125, "{}", net.ctx());
    assert!(net.stderr.contains("need root"), "{}", net.ctx());
}
