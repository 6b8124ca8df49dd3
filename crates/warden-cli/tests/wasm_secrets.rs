//! Leased secrets for WebAssembly, end to end: `warden secret put`, then
//! `warden run --allow secret:NAME guest.wat`; the guest reads the value
//! through the `warden.secret` host function, and everything that leaves
//! the run (stdout, stderr, logs, the report, the ledger) shows
//! `[REDACTED:NAME]` instead, also when the guest writes it a byte at a
//! time; an ungranted name is denied; `warden lease revoke` during the run
//! makes the next read fail.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;

const NAME: &str = "api-token";
const VALUE: &str = "tok-3f9a1c77e2b04d6d";
const VALUE_B64: &str = "dG9rLTNmOWExYzc3ZTJiMDRkNmQ=";
const MARK: &str = "[REDACTED:api-token]";

fn state(t: &TempDir) -> String {
    t.root.join("state").display().to_string()
}

fn put_secret(t: &TempDir) {
    t.raw(["secret", "put", NAME])
        .env("WARDEN_STATE", &state(t))
        .stdin(VALUE)
        .go()
        .expect_code(0, "secret put");
}

/// A preview-1 guest (in `work/`) that reads secret `name`: `$read(cap)`
/// calls `warden.secret` into a buffer at 1024 and returns the status,
/// `$len` is the length written, `$rc(n)` prints `rc=N`.
fn guest(t: &TempDir, file: &str, name: &str, imports: &str, body: &str) -> String {
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "warden" "secret" (func $secret (param i32 i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") 1)
  (data (i32.const 0) "{name}")
  (data (i32.const 3000) "rc=?\n")
  (data (i32.const 3010) "value=")
  (data (i32.const 3100) "b64={VALUE_B64}\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 2056) (local.get $ptr))
    (i32.store (i32.const 2060) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 2056) (i32.const 1) (i32.const 2064))))
  (func $read (param $cap i32) (result i32)
    (call $secret (i32.const 0) (i32.const {len}) (i32.const 1024) (local.get $cap) (i32.const 2048)))
  (func $len (result i32) (i32.load (i32.const 2048)))
  (func $rc (param $rc i32)
    (i32.store8 (i32.const 3003) (i32.add (i32.const 48) (local.get $rc)))
    (call $write (i32.const 1) (i32.const 3000) (i32.const 5)))
  (func $nl (param $fd i32) (call $write (local.get $fd) (i32.const 3004) (i32.const 1)))
  (func (export "_start") (local $i i32)
    {body}))
"#,
        len = name.len(),
    );
    t.write(file, &wat).display().to_string()
}

#[test]
fn a_wasm_guest_reads_its_leased_secret_and_nothing_that_leaves_shows_it() {
    let t = TempDir::new("wasm-secret");
    let s = state(&t);
    put_secret(&t);
    // The value whole, a byte per write (stdout and stderr), base64, and
    // in a log record.
    let module = guest(
        &t,
        "leak.wat",
        NAME,
        r#"(import "warden" "log" (func $log (param i32 i32 i32) (result i32)))"#,
        r#"
    (call $rc (call $read (i32.const 1024)))
    (call $write (i32.const 1) (i32.const 3010) (i32.const 6))
    (call $write (i32.const 1) (i32.const 1024) (call $len))
    (call $nl (i32.const 1))
    (call $write (i32.const 1) (i32.const 3010) (i32.const 6))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (call $len)))
      (call $write (i32.const 1) (i32.add (i32.const 1024) (local.get $i)) (i32.const 1))
      (call $write (i32.const 2) (i32.add (i32.const 1024) (local.get $i)) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $nl (i32.const 1))
    (call $nl (i32.const 2))
    (call $write (i32.const 1) (i32.const 3100) (i32.const 33))
    (drop (call $log (i32.const 2) (i32.const 1024) (call $len)))
"#,
    );
    let out = t
        .run([
            "--allow",
            "secret:api-token",
            "--allow",
            "log:write",
            &module,
        ])
        .env("WARDEN_STATE", &s)
        .go();
    out.expect_ok("a wasm run with a secret");
    assert_eq!(
        out.stdout,
        format!("rc=0\nvalue={MARK}\nvalue={MARK}\nb64={MARK}\n"),
        "{}",
        out.ctx()
    );
    assert!(out.stderr.contains(&format!("{MARK}\n")), "{}", out.ctx());
    assert!(
        out.stderr.contains(&format!("warden: log: info: {MARK}")),
        "{}",
        out.ctx()
    );
    let r = out.report();
    assert_eq!(r["backend"], "wasm", "{}", out.ctx());
    assert_eq!(r["leases"][0]["secret"], NAME);
    assert_eq!(r["leases"][0]["version"], 1);
    let lease = r["leases"][0]["lease"].as_str().unwrap().to_string();
    assert_eq!(r["logs"][0]["message"], MARK);
    for text in [&out.stdout, &out.stderr, &r.to_string()] {
        assert!(
            !text.contains(VALUE) && !text.contains(VALUE_B64),
            "{}",
            out.ctx()
        );
    }
    // The ledger names the lease, never the value; the lease ended with
    // the run.
    let log = t.raw(["audit", "log"]).env("WARDEN_STATE", &s).go();
    assert!(log.stdout.contains(&lease), "{}", log.ctx());
    assert!(!log.stdout.contains(VALUE));
    let leases = t.raw(["lease", "list"]).env("WARDEN_STATE", &s).go();
    assert!(
        leases.stdout.contains(&lease) && leases.stdout.contains("revoked"),
        "{}",
        leases.ctx()
    );
}

#[test]
fn an_ungranted_secret_is_denied_to_a_wasm_guest() {
    let t = TempDir::new("wasm-secret-denied");
    let s = state(&t);
    put_secret(&t);
    let module = guest(
        &t,
        "other.wat",
        "other",
        "",
        "(call $rc (call $read (i32.const 1024)))",
    );
    let out = t
        .run(["--allow", "secret:api-token", &module])
        .env("WARDEN_STATE", &s)
        .go();
    assert_eq!(out.stdout, "rc=1\n", "{}", out.ctx());
    out.expect_status("violation", "a denied read");
    let r = out.report();
    let details: Vec<&str> = r["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        ["warden.secret: secret:other not granted"],
        "{}",
        out.ctx()
    );
    // Without any secret grant the function is not even linked.
    let out = t.run([&module]).env("WARDEN_STATE", &s).go();
    out.expect_code(126, "no secret grant");
    assert!(out.stderr.contains("warden.secret"), "{}", out.ctx());
}

#[test]
fn revoking_the_lease_during_a_wasm_run_fails_the_next_read() {
    let t = TempDir::new("wasm-secret-revoke");
    let s = state(&t);
    put_secret(&t);
    // After its first read the guest makes `marks/ready` (in its one
    // preopened directory, fd 3), then reads every 2 ms until a read fails
    // (at most ~10 s). The first answer is followed by 256 dots, more than
    // the redactor holds back.
    let marks = t.mkdir("marks");
    let module = guest(
        &t,
        "loop.wat",
        NAME,
        r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (data (i32.const 3300) "ready")"#,
        r#"
    (i32.store8 (i32.const 4104) (i32.const 0))
    (i32.store (i32.const 4112) (i32.const 1))
    (i64.store (i32.const 4120) (i64.const 2000000))
    (call $rc (call $read (i32.const 1024)))
    ;; path_open(3, 0, "ready", O_CREAT, FD_WRITE, 0, 0, &fd)
    (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 3300) (i32.const 5)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 3400)))
    (memory.fill (i32.const 5000) (i32.const 46) (i32.const 256))
    (call $write (i32.const 1) (i32.const 5000) (i32.const 256))
    (call $nl (i32.const 1))
    (block $done (loop $again
      (drop (call $poll_oneoff (i32.const 4096) (i32.const 4160) (i32.const 1) (i32.const 4200)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $done (i32.ge_u (local.get $i) (i32.const 5000)))
      (br_if $again (i32.eqz (call $read (i32.const 1024))))))
    (call $rc (call $read (i32.const 1024)))
"#,
    );
    let running = t
        .run([
            "--allow",
            "secret:api-token",
            "--allow",
            "clock:read",
            "--allow",
            "fs:write:./marks",
            &module,
        ])
        .env("WARDEN_STATE", &s)
        .spawn();
    let until = Instant::now() + Duration::from_secs(30);
    while !marks.join("ready").exists() {
        assert!(Instant::now() < until, "the guest never read its secret");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The run's lease: the one active lease.
    let list = t.raw(["lease", "list"]).env("WARDEN_STATE", &s).go();
    let active: Vec<&str> = list
        .stdout
        .lines()
        .filter(|l| l.contains("api-token@1") && l.ends_with("active"))
        .collect();
    assert_eq!(active.len(), 1, "{}", list.ctx());
    let lease = active[0].split('\t').next().unwrap().to_string();
    t.raw(["lease", "revoke", &lease])
        .env("WARDEN_STATE", &s)
        .go()
        .expect_code(0, "lease revoke");
    let out = running.wait();
    assert_eq!(
        out.stdout,
        format!("rc=0\n{}\nrc=1\n", ".".repeat(256)),
        "{}",
        out.ctx()
    );
    out.expect_status("violation", "reads after the revocation");
    let r = out.report();
    let details: Vec<&str> = r["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        ["warden.secret: the lease of secret:api-token was revoked (2 attempts)"],
        "{}",
        out.ctx()
    );
    assert_eq!(r["leases"][0]["lease"], lease.as_str());
}
