//! The `secret` host capability (`secret:NAME`): a guest reads a value
//! leased to its invocation through `warden.secret`; each read checks the
//! lease in the lease store, so a revoked or expired lease fails later
//! reads; what the guest prints or logs is redacted of every form of the
//! value as `[REDACTED:NAME]`, also when written a byte at a time.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::{Invocation, LeasedSecret, SecretValue, Status};
use warden_secrets::{Holder, LeaseStore};
use warden_wasm::{Input, RunIo, WasmBackend, WasmConfig};

const NAME: &str = "api-token";
const VALUE: &str = "tok-3f9a1c77e2b04d6d";
/// `base64(VALUE)` and `base64("x" + VALUE)`: forms a guest could print.
const VALUE_B64: &str = "dG9rLTNmOWExYzc3ZTJiMDRkNmQ=";
const SHIFTED_B64: &str = "eHRvay0zZjlhMWM3N2UyYjA0ZDZk";
const MARK: &str = "[REDACTED:api-token]";

/// The state directory of this suite's lease store, and a backend that
/// checks leases there.
fn state() -> &'static (TempDir, WasmBackend) {
    static S: OnceLock<(TempDir, WasmBackend)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = TempDir::new("secret-state");
        let backend = WasmBackend::with_config(WasmConfig {
            lease_state_dir: Some(dir.path().to_path_buf()),
            pool_instances: 0,
            ..WasmConfig::default()
        })
        .expect("wasm backend");
        (dir, backend)
    })
}

fn leases() -> LeaseStore {
    LeaseStore::open(state().0.path()).expect("lease store")
}

/// A lease on `name` for `ttl`, as the engine makes one.
fn lease(name: &str, value: &str, ttl: Duration) -> LeasedSecret {
    let granted = leases()
        .grant(
            "default",
            name,
            1,
            ttl,
            Holder::current().unwrap(),
            warden_secrets::unix_now(),
        )
        .expect("grant a lease");
    LeasedSecret {
        name: name.to_string(),
        version: 1,
        lease_id: granted.id,
        env: false,
        value: SecretValue::new(zeroize::Zeroizing::new(value.as_bytes().to_vec())),
    }
}

/// A preview-1 guest that reads secret `name`: `$read(cap)` calls
/// `warden.secret` into a buffer at 1024 and returns the status, `$len` is
/// the length it wrote, `$rc(n)` prints `rc=N`, `$write(fd, ptr, len)`.
/// Memory: 3010 `value=`, 3100 `b64=VALUE_B64`, 3200 `b64 SHIFTED_B64`.
fn guest(dir: &TempDir, file: &str, name: &str, imports: &str, body: &str) -> PathBuf {
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
  (data (i32.const 3200) "b64 {SHIFTED_B64}")
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
    let path = dir.path().join(file);
    std::fs::write(&path, wat).unwrap();
    path
}

fn inv_with(module: &std::path::Path, grants: &[&str], secrets: Vec<LeasedSecret>) -> Invocation {
    let mut i = inv(module, &[]);
    i.capabilities = caps(grants);
    i.secrets = secrets;
    i
}

fn run_here(i: &Invocation) -> Ran {
    let (io, out, err) = RunIo::captured(Input::Empty);
    let outcome = state().1.run_with_io(i, &io).expect("backend runs");
    Ran {
        outcome,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// Reads the value, prints it whole, a byte at a time (to stdout and
/// stderr), and a base64 form; logs it and another form; asks with too
/// small a buffer.
const READ_AND_LEAK: &str = r#"
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
    (call $write (i32.const 1) (i32.const 3100) (i32.const 33))
    (drop (call $log (i32.const 2) (i32.const 1024) (call $len)))
    (drop (call $log (i32.const 3) (i32.const 3200) (i32.const 32)))
    (call $rc (call $read (i32.const 3)))
"#;

const LOG_IMPORT: &str = r#"(import "warden" "log" (func $log (param i32 i32 i32) (result i32)))"#;

#[test]
fn a_granted_secret_is_read_and_every_output_redacted() {
    let dir = TempDir::new("secret-read");
    let module = guest(&dir, "leak.wat", NAME, LOG_IMPORT, READ_AND_LEAK);
    let leased = lease(NAME, VALUE, Duration::from_secs(60));
    let i = inv_with(&module, &["secret:api-token", "log:write"], vec![leased]);
    let r = run_here(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    // The guest got the value (its length, and it printed it: redacted).
    assert_eq!(
        r.stdout,
        format!("rc=0\nvalue={MARK}\nvalue={MARK}\nb64={MARK}\nrc=9\n")
    );
    assert_eq!(r.stderr, MARK);
    let logs: Vec<&str> = r.outcome.logs.iter().map(|l| l.message.as_str()).collect();
    // Base64 of "x" + the value: the first two characters carry a bit of
    // the "x", the rest is the value's alone.
    assert_eq!(logs, [MARK.to_string(), format!("b64 eH{MARK}")]);
    for text in [&r.stdout, &r.stderr, &format!("{:?}", r.outcome)] {
        assert!(!text.contains(VALUE) && !text.contains(VALUE_B64), "{text}");
    }
    // The cap counts the guest's bytes; the digest is of what was handed on.
    let guest_stdout = 5 + (6 + VALUE.len() + 1) * 2 + 4 + VALUE_B64.len() + 1 + 5;
    assert_eq!(r.outcome.stdout_bytes, guest_stdout as u64);
    assert_eq!(r.outcome.stderr_bytes, VALUE.len() as u64);
    let streams = r.outcome.streams.as_ref().unwrap();
    assert_eq!(streams.stdout, sha256_hex(r.stdout.as_bytes()));
    assert_eq!(streams.stderr, sha256_hex(r.stderr.as_bytes()));
    assert!(
        r.outcome.violations.is_empty(),
        "{:?}",
        r.outcome.violations
    );
}

#[test]
fn a_secret_cut_by_the_output_limit_leaves_no_prefix() {
    let dir = TempDir::new("secret-cut");
    let body = r#"
    (call $rc (call $read (i32.const 1024)))
    (memory.fill (i32.const 5000) (i32.const 46) (i32.const 256))
    (call $write (i32.const 1) (i32.const 5000) (i32.const 256))
    (call $write (i32.const 1) (i32.const 3010) (i32.const 6))
    (call $write (i32.const 1) (i32.const 1024) (call $len))
"#;
    let module = guest(&dir, "cut.wat", NAME, "", body);
    let leased = lease(NAME, VALUE, Duration::from_secs(60));
    let mut i = inv_with(&module, &["secret:api-token"], vec![leased]);
    // The cap falls inside the value.
    i.limits.output_bytes = (5 + 256 + 6 + 10) as u64;
    let r = run_here(&i);
    assert_eq!(r.outcome.status, Status::OutputLimit, "{:?}", r.outcome);
    assert!(r.outcome.truncated);
    assert_eq!(r.outcome.stdout_bytes, i.limits.output_bytes);
    let full = format!("rc=0\n{}value=", ".".repeat(256));
    assert!(!r.stdout.contains("tok-"), "{}", r.stdout);
    assert!(full.starts_with(&r.stdout), "{}", r.stdout);
    assert!(r.stdout.starts_with("rc=0\n...."), "{}", r.stdout);
}

#[test]
fn an_ungranted_name_is_denied_and_recorded() {
    let dir = TempDir::new("secret-denied");
    let module = guest(
        &dir,
        "other.wat",
        "other",
        "",
        "(call $rc (call $read (i32.const 1024)))",
    );
    let leased = lease(NAME, VALUE, Duration::from_secs(60));
    let r = run_here(&inv_with(&module, &["secret:api-token"], vec![leased]));
    assert_eq!(r.stdout, "rc=1\n");
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden.secret: secret:other not granted"]
    );
}

#[test]
fn without_a_secret_grant_the_function_is_not_linked() {
    let dir = TempDir::new("secret-unlinked");
    let module = guest(
        &dir,
        "s.wat",
        NAME,
        "",
        "(call $rc (call $read (i32.const 1024)))",
    );
    let r = run_here(&inv_with(&module, &["log:write"], Vec::new()));
    assert_eq!(r.outcome.exit_code, Some(126), "{:?}", r.outcome);
    let error = r.outcome.error.unwrap_or_default();
    assert!(
        error.contains("warden.secret") && error.contains("secret:NAME"),
        "{error}"
    );
}

#[test]
fn a_grant_without_its_lease_is_refused_before_the_run() {
    let dir = TempDir::new("secret-unleased");
    let module = guest(
        &dir,
        "s.wat",
        NAME,
        "",
        "(call $rc (call $read (i32.const 1024)))",
    );
    let (io, out, _) = RunIo::captured(Input::Empty);
    let err = state()
        .1
        .run_with_io(&inv_with(&module, &["secret:api-token"], Vec::new()), &io)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret:api-token") && err.contains("no lease"),
        "{err}"
    );
    assert_eq!(out.text(), "");
}

#[test]
fn a_revoked_or_expired_lease_fails_the_read() {
    let dir = TempDir::new("secret-revoked");
    let module = guest(
        &dir,
        "s.wat",
        NAME,
        "",
        "(call $rc (call $read (i32.const 1024)))",
    );
    let revoked = lease(NAME, VALUE, Duration::from_secs(60));
    leases()
        .revoke(&revoked.lease_id, warden_secrets::unix_now())
        .unwrap();
    let r = run_here(&inv_with(&module, &["secret:api-token"], vec![revoked]));
    assert_eq!(r.stdout, "rc=1\n");
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden.secret: the lease of secret:api-token was revoked"]
    );
    // A TTL of zero: expired from the start.
    let expired = lease(NAME, VALUE, Duration::ZERO);
    let r = run_here(&inv_with(&module, &["secret:api-token:env"], vec![expired]));
    assert_eq!(r.stdout, "rc=1\n");
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden.secret: the lease of secret:api-token expired"]
    );
}

/// Reads until a read fails (sleeping 2 ms between reads, at most ~10 s),
/// printing the first status and the failing one. The first is followed
/// by 256 dots: the redactor holds back fewer bytes than its longest
/// pattern until more come, and the test waits to see it.
const READ_UNTIL_REFUSED: &str = r#"
    (i32.store8 (i32.const 4104) (i32.const 0))
    (i32.store (i32.const 4112) (i32.const 1))
    (i64.store (i32.const 4120) (i64.const 2000000))
    (call $rc (call $read (i32.const 1024)))
    (memory.fill (i32.const 5000) (i32.const 46) (i32.const 256))
    (call $write (i32.const 1) (i32.const 5000) (i32.const 256))
    (call $nl (i32.const 1))
    (block $done (loop $again
      (drop (call $poll_oneoff (i32.const 4096) (i32.const 4160) (i32.const 1) (i32.const 4200)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $done (i32.ge_u (local.get $i) (i32.const 5000)))
      (br_if $again (i32.eqz (call $read (i32.const 1024))))))
    (call $rc (call $read (i32.const 1024)))
"#;

#[test]
fn a_lease_revoked_during_the_run_fails_the_next_read() {
    let dir = TempDir::new("secret-midrun");
    let poll = r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;
    let module = guest(&dir, "loop.wat", NAME, poll, READ_UNTIL_REFUSED);
    let leased = lease(NAME, VALUE, Duration::from_secs(60));
    let lease_id = leased.lease_id.clone();
    let i = inv_with(&module, &["secret:api-token", "clock:read"], vec![leased]);
    let (io, out, _) = RunIo::captured(Input::Empty);
    let running = std::thread::spawn(move || state().1.run_with_io(&i, &io).unwrap());
    let until = Instant::now() + Duration::from_secs(10);
    while !out.text().starts_with("rc=0") {
        assert!(Instant::now() < until, "the first read never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
    leases()
        .revoke(&lease_id, warden_secrets::unix_now())
        .unwrap();
    let outcome = running.join().unwrap();
    assert_eq!(out.text(), format!("rc=0\n{}\nrc=1\n", ".".repeat(256)));
    assert_eq!(outcome.status, Status::Violation, "{outcome:?}");
    assert_eq!(
        violations_of(&outcome, "capability"),
        ["warden.secret: the lease of secret:api-token was revoked (2 attempts)"]
    );
}

#[test]
fn an_env_grant_also_sets_the_variable() {
    let mut leased = lease(NAME, VALUE, Duration::from_secs(60));
    leased.env = true;
    let r = run_here(&inv_with(
        &rust("env"),
        &["secret:api-token:env"],
        vec![leased],
    ));
    r.expect_exited();
    assert!(
        r.stdout.contains(&format!("SECRET_API_TOKEN={MARK}\n")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(VALUE));
    // A value that cannot be a variable refuses the run, naming the grant.
    let mut binary = lease(NAME, "a\0b", Duration::from_secs(60));
    binary.env = true;
    let (io, _, _) = RunIo::captured(Input::Empty);
    let err = state()
        .1
        .run_with_io(
            &inv_with(&rust("env"), &["secret:api-token:env"], vec![binary]),
            &io,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret:api-token:env"), "{err}");
}

#[test]
fn a_callee_gets_no_secret_of_its_caller() {
    let mut leased = lease(NAME, VALUE, Duration::from_secs(60));
    leased.env = true;
    let mut i = inv(&rust("hostcall"), &["envy", ""]);
    i.capabilities = caps(&["module:call:envy", "secret:api-token:env"]);
    i.modules = vec![warden_core::ModuleRef {
        name: "envy".into(),
        path: rust("env"),
        grants: None,
    }];
    i.secrets = vec![leased];
    let r = run_here(&i);
    r.expect_exited();
    // It runs (a secret grant without a lease would refuse it), without
    // the variable.
    assert!(r.stdout.starts_with("rc=0 exit=0\n"), "{}", r.stdout);
    assert!(!r.stdout.contains("SECRET_API_TOKEN"), "{}", r.stdout);
}

#[test]
fn a_component_reads_through_the_wit_interface() {
    let leased = lease(NAME, VALUE, Duration::from_secs(60));
    let lease_id = leased.lease_id.clone();
    let mut i = inv(&component("hostsecret"), &[NAME, "other"]);
    i.capabilities = caps(&["secret:api-token"]);
    i.secrets = vec![leased.clone()];
    let r = run_here(&i);
    assert_eq!(r.outcome.exit_code, Some(0), "{:?} {}", r.outcome, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], format!("{NAME}: Ok({MARK})"));
    assert!(lines[1].contains("\"denied\""), "{}", lines[1]);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden:host/secret.read: secret:other not granted"]
    );
    // Revoked: denied too.
    leases()
        .revoke(&lease_id, warden_secrets::unix_now())
        .unwrap();
    let mut i = inv(&component("hostsecret"), &[NAME]);
    i.capabilities = caps(&["secret:api-token"]);
    i.secrets = vec![leased];
    let r = run_here(&i);
    assert!(r.stdout.contains("\"denied\""), "{}", r.stdout);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden:host/secret.read: the lease of secret:api-token was revoked"]
    );
    // Without a secret grant the component is refused before it starts.
    let r = run_here(&inv(&component("hostsecret"), &[NAME]));
    assert_eq!(r.outcome.exit_code, Some(126), "{:?}", r.outcome);
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden:host/secret@0.1.0"), "{error}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
