//! Secrets end to end: stored encrypted (the value is in no file of the
//! state directory), leased to a jailed run granted `secret:NAME` as a
//! 0400 file on a private tmpfs (and as an environment variable with
//! `:env`), redacted in every form from what the program prints, even one
//! byte per write, named (never shown) in the report and the ledger, and
//! revoked when the run ends; a crashed Warden's lease is reaped.

mod common;

use common::TempDir;

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

const VALUE: &str = "hunter2-Very/Secret+Value";

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn a_leased_secret_is_readable_inside_and_redacted_outside() {
    let t = TempDir::new("secrets");
    let s = state(&t);
    let out = t
        .raw(["secret", "put", "db-password"])
        .env("WARDEN_STATE", &s)
        .stdin(VALUE)
        .go();
    out.expect_code(0, "put");
    let out = t.raw(["secret", "list"]).env("WARDEN_STATE", &s).go();
    assert_eq!(out.stdout, "db-password\t1\tversions 1\n");
    assert!(files_containing(&t.root.join("state"), VALUE.as_bytes()).is_empty());

    // Every form, and one byte per write.
    let script = r#"
import base64, binascii, json, os, sys, urllib.parse
v = open('/run/secrets/db-password', 'rb').read()
st = os.stat('/run/secrets/db-password')
print('mode', oct(st.st_mode & 0o777), 'len', len(v))
print('exact', v.decode())
print('b64', base64.b64encode(v).decode())
print('b64url', base64.urlsafe_b64encode(b'xy' + v).decode())
print('hex', binascii.hexlify(v).decode().upper())
print('url', urllib.parse.quote(v.decode(), safe=''))
print('json', json.dumps({'k': v.decode()}))
sys.stdout.flush()
for b in b'slow ' + v + b'\n':
    sys.stdout.buffer.write(bytes([b])); sys.stdout.flush()
print('env', os.environ.get('SECRET_DB_PASSWORD'), file=sys.stderr)
"#;
    let out = t
        .run([
            "--allow",
            "secret:db-password:env",
            "--",
            "python3",
            "-c",
            script,
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_ok("run with a secret");
    assert!(out.stdout.contains("mode 0o400 len 25"), "{}", out.ctx());
    assert!(
        out.stdout.contains("exact [REDACTED:db-password]"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stdout.contains("slow [REDACTED:db-password]"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stderr.contains("env [REDACTED:db-password]"),
        "{}",
        out.ctx()
    );
    for form in ["b64", "b64url", "hex", "url", "json"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(form))
            .unwrap_or_else(|| panic!("no {form} line: {}", out.ctx()));
        assert!(line.contains("[REDACTED:db-password]"), "{form}: {line}");
    }
    assert!(!out.stdout.contains(VALUE) && !out.stderr.contains(VALUE));
    let r = out.report();
    let lease = r["leases"][0]["lease"].as_str().unwrap().to_string();
    assert_eq!(r["leases"][0]["secret"], "db-password");
    assert_eq!(r["leases"][0]["version"], 1);
    assert!(!r.to_string().contains(VALUE));
    // The ledger names the lease, never the value.
    let log = t.raw(["audit", "log"]).env("WARDEN_STATE", &s).go();
    assert!(log.stdout.contains(&lease), "{}", log.ctx());
    assert!(!log.stdout.contains(VALUE));
    assert!(files_containing(&t.root.join("state"), VALUE.as_bytes()).is_empty());
    // The lease ended with the run.
    let out = t.raw(["lease", "list"]).env("WARDEN_STATE", &s).go();
    assert!(
        out.stdout.contains(&lease) && out.stdout.contains("revoked"),
        "{}",
        out.ctx()
    );

    // Not granted: nothing there.
    let out = t
        .run(["--", "sh", "-c", "ls /run/secrets 2>&1; true"])
        .env("WARDEN_STATE", &s)
        .go();
    assert!(out.stdout.contains("No such file"), "{}", out.ctx());
    // A secret that does not exist: the run does not start.
    let out = t
        .run(["--allow", "secret:nope", "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("missing secret");
    assert!(out.stderr.contains("no secret \"nope\""), "{}", out.ctx());
}

#[test]
fn another_tenants_secret_is_out_of_reach_and_binary_values_stay_files() {
    let t = TempDir::new("secrets-tenants");
    let s = state(&t);
    let w = |args: &[&str]| t.raw(args.iter().copied()).env("WARDEN_STATE", &s).go();
    w(&["tenant", "add", "beta"]).expect_code(0, "tenant");
    let key = w(&["principal", "add", "bob", "--tenant", "beta"]);
    let key = key.stdout.trim().to_string();
    t.raw(["secret", "put", "token"])
        .env("WARDEN_STATE", &s)
        .stdin("default-tenant-token")
        .go()
        .expect_code(0, "put");
    // Bob (tenant beta) cannot list, lease or name the default tenant's.
    let out = t
        .raw(["secret", "list"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    assert_eq!(out.stdout, "");
    let out = t
        .raw(["secret", "list", "--tenant", "default"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    out.expect_code(1, "another tenant's list");
    let out = t
        .run(["--allow", "secret:token", "--", "cat", "/run/secrets/token"])
        .env("WARDEN_STATE", &s)
        .env("WARDEN_API_KEY", &key)
        .go();
    out.expect_warden_error("another tenant's secret");
    assert!(!out.stdout.contains("default-tenant-token"));
    // A binary value: a file, not an environment variable.
    let bin = t.write_root("bin.dat", "a\u{0}b-binary-value");
    w(&[
        "secret",
        "put",
        "blob",
        "--from-file",
        &bin.display().to_string(),
    ])
    .expect_code(0, "put file");
    let out = t
        .run(["--allow", "secret:blob:env", "--", "true"])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_warden_error("binary env secret");
    assert!(
        out.stderr.contains("cannot be an environment variable"),
        "{}",
        out.ctx()
    );
}

/// A Warden killed while it holds a lease: the next run that leases
/// revokes it (its holder is gone).
#[test]
fn a_crashed_runs_lease_is_reaped() {
    let t = TempDir::new("secrets-reap");
    let s = state(&t);
    t.raw(["secret", "put", "k"])
        .env("WARDEN_STATE", &s)
        .stdin("reap-me-value")
        .go()
        .expect_code(0, "put");
    let mut child = std::process::Command::new(common::warden_bin())
        .args(["run", "--allow", "secret:k", "--", "sleep", "30"])
        .env("WARDEN_STATE", &s)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leases = || t.raw(["lease", "list"]).env("WARDEN_STATE", &s).go().stdout;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !leases().contains("active") {
        assert!(std::time::Instant::now() < deadline, "no lease appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        leases().contains("active"),
        "the killed run's lease is still active until reaped"
    );
    t.run(["--allow", "secret:k", "--", "true"])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_ok("a later run");
    let after = leases();
    assert!(!after.contains("active"), "{after}");
}

/// `warden lease revoke` while a jailed run holds the lease stops the run
/// (the file is in its tmpfs and may already be open, so ending the lease
/// means ending the program's hold on it): within a fraction of a second,
/// status `error`, the report naming the secret whose lease ended.
#[test]
fn revoking_a_lease_stops_the_jailed_run_holding_it() {
    use std::time::{Duration, Instant};
    let t = TempDir::new("secrets-revoke");
    let s = state(&t);
    t.raw(["secret", "put", "db-password"])
        .env("WARDEN_STATE", &s)
        .stdin(VALUE)
        .go()
        .expect_code(0, "put");
    let marks = t.root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let script = format!(
        "cat /run/secrets/db-password > /dev/null && touch {m}/read && sleep 20 && touch {m}/late",
        m = marks.display()
    );
    let running = t
        .run([
            "--allow",
            "secret:db-password",
            "--allow",
            &format!("fs:write:{}", marks.display()),
            "--wall-time",
            "60s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("WARDEN_STATE", &s)
        .spawn();
    let until = Instant::now() + Duration::from_secs(30);
    while !marks.join("read").exists() {
        assert!(Instant::now() < until, "the program never read its secret");
        std::thread::sleep(Duration::from_millis(10));
    }
    let list = t.raw(["lease", "list"]).env("WARDEN_STATE", &s).go();
    let active: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.contains("db-password@1") && l.ends_with("active"))
        .collect();
    assert_eq!(active.len(), 1, "{}", list.ctx());
    let lease = active[0].split('\t').next().unwrap().to_string();
    let revoked = Instant::now();
    t.raw(["lease", "revoke", &lease])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "lease revoke");
    let out = running.wait();
    let took = revoked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after the revocation"
    );
    assert!(!marks.join("late").exists(), "the program went on");
    out.expect_status("error", "a lease that ended");
    let r = out.report();
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the lease of secret db-password ended") && error.contains("revoked"),
        "{}",
        out.ctx()
    );
    assert_eq!(r["leases"][0]["lease"], lease.as_str());
    assert!(!out.stdout.contains(VALUE) && !out.stderr.contains(VALUE));
}
