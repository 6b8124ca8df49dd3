//! The `call` host capability: module-to-module calls with and without
//! `module:call:NAME`, the caller's grants as the callee's ceiling (a
//! callee that asks for more gets no more), limits that carry over, and a
//! bounded depth.
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::{Invocation, ModuleRef, Status};

fn module(name: &str, path: &Path, grants: Option<&[&str]>) -> ModuleRef {
    ModuleRef {
        name: name.into(),
        path: path.to_path_buf(),
        grants: grants.map(caps),
    }
}

/// `hostcall NAME INPUT` with `grants` and the modules `modules`.
fn caller(grants: &[&str], modules: Vec<ModuleRef>, name: &str, input: &str) -> Invocation {
    let mut i = inv(&rust("hostcall"), &[name, input]);
    i.capabilities = caps(grants);
    i.modules = modules;
    i
}

#[test]
fn a_granted_call_runs_the_callee_with_the_input() {
    let echo = module("echoer", &rust("hostcall"), None);
    let r = run(&caller(
        &["module:call:echoer"],
        vec![echo],
        "echoer",
        "echo hi there",
    ));
    r.expect_exited();
    assert_eq!(r.stdout, "rc=0 exit=0\nhi there");
    // The callee's exit status comes back; its failure is not the caller's.
    let reader = module("reader", &rust("readin"), None);
    let r = run(&caller(
        &["module:call:reader"],
        vec![reader],
        "reader",
        "/nonexistent",
    ));
    assert!(r.stdout.starts_with("rc=0 exit=2\nerror: "), "{}", r.stdout);
    assert_eq!(r.outcome.status, Status::Exited);
}

#[test]
fn modules_registered_with_the_backend_are_callable() {
    backend()
        .register_module("registered-echo", &rust("hostcall"), None)
        .unwrap();
    let r = run(&caller(
        &["module:call:registered-echo"],
        Vec::new(),
        "registered-echo",
        "echo from the registry",
    ));
    assert_eq!(r.stdout, "rc=0 exit=0\nfrom the registry");
    assert!(backend()
        .register_module("../bad", &rust("hostcall"), None)
        .is_err());
}

#[test]
fn without_a_module_call_grant_call_is_not_even_linked() {
    let echo = module("echoer", &rust("hostcall"), None);
    let r = run(&caller(&["log:write"], vec![echo], "echoer", "echo hi"));
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden.call"), "{error}");
    assert!(error.contains("module:call:NAME"), "{error}");
}

#[test]
fn a_call_to_an_ungranted_module_is_denied() {
    let echo = module("echoer", &rust("hostcall"), None);
    let other = module("other", &rust("hostcall"), None);
    let r = run(&caller(
        &["module:call:other"],
        vec![echo, other],
        "echoer",
        "echo hi",
    ));
    // DENIED (1); the callee never ran.
    assert_eq!(r.stdout, "rc=1 exit=-1\n");
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["warden.call: module:call:echoer not granted"]
    );
    // A granted name that is not registered: NOT_FOUND (2).
    let r = run(&caller(&["module:call:nobody"], Vec::new(), "nobody", "x"));
    assert_eq!(r.stdout, "rc=2 exit=-1\n");
}

/// `a/` with a file, `b/` with a secret.
fn dirs(tag: &str) -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = TempDir::new(tag);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("file"), "a's file").unwrap();
    std::fs::write(b.join("secret"), "b's secret").unwrap();
    (tmp, a, b)
}

#[test]
fn a_callee_gets_no_more_than_its_caller() {
    let (_tmp, a, b) = dirs("ceiling");
    let a_file = a.join("file").display().to_string();
    let b_secret = b.join("secret").display().to_string();
    let grants = [
        &format!("fs:read:{}", a.display()) as &str,
        "module:call:reader",
    ];

    // A callee without declared grants has the caller's: /a yes, /b no.
    let reader = module("reader", &rust("readin"), None);
    let r = run(&caller(&grants, vec![reader.clone()], "reader", &a_file));
    assert_eq!(r.stdout, "rc=0 exit=0\na's file");
    let r = run(&caller(&grants, vec![reader], "reader", &b_secret));
    assert!(r.stdout.starts_with("rc=0 exit=2\nerror: "), "{}", r.stdout);
    assert!(!r.stdout.contains("b's secret"));

    // A callee that asks for /a and /b gets /a only.
    let b_grant = format!("fs:read:{}", b.display());
    let a_grant = format!("fs:read:{}", a.display());
    let greedy = module("reader", &rust("readin"), Some(&[&a_grant, &b_grant]));
    let r = run(&caller(&grants, vec![greedy.clone()], "reader", &b_secret));
    assert!(r.stdout.starts_with("rc=0 exit=2\nerror: "), "{}", r.stdout);
    assert!(!r.stdout.contains("b's secret"));
    let r = run(&caller(&grants, vec![greedy], "reader", &a_file));
    assert_eq!(r.stdout, "rc=0 exit=0\na's file");

    // A callee that asks only for what the caller lacks gets nothing.
    let only_b = module("reader", &rust("readin"), Some(&[&b_grant]));
    let r = run(&caller(&grants, vec![only_b], "reader", &a_file));
    assert!(r.stdout.starts_with("rc=0 exit=2\n"), "{}", r.stdout);
}

#[test]
fn a_callee_importing_what_its_caller_lacks_is_refused() {
    // hostkv imports the kv functions; the caller has no kv grant, so the
    // callee cannot have one either: it is refused before it starts.
    let kv_user = module("kvuser", &rust("hostkv"), Some(&["kv:write:*"]));
    let r = run(&caller(
        &["module:call:kvuser"],
        vec![kv_user],
        "kvuser",
        "",
    ));
    assert_eq!(r.stdout, "rc=0 exit=126\n");
    let denied = violations_of(&r.outcome, "capability");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].starts_with("in module kvuser: "), "{}", denied[0]);
    assert!(denied[0].contains("warden.kv_"), "{}", denied[0]);
}

#[test]
fn a_callee_cannot_call_what_its_caller_cannot() {
    // The caller may call `relay` only; relay (declaring every grant it
    // could want) tries to call `echoer`.
    let relay = module(
        "relay",
        &rust("hostcall"),
        Some(&["module:call:relay", "module:call:echoer"]),
    );
    let echo = module("echoer", &rust("hostcall"), None);
    let r = run(&caller(
        &["module:call:relay"],
        vec![relay, echo],
        "relay",
        "call echoer echo hi",
    ));
    assert_eq!(r.stdout, "rc=0 exit=0\nrc=1 exit=-1\n", "{:?}", r.outcome);
    assert_eq!(
        violations_of(&r.outcome, "capability"),
        ["in module relay: warden.call: module:call:echoer not granted"]
    );
}

#[test]
fn calls_nest_at_most_eight_deep() {
    let rec = module("rec", &rust("hostcall"), None);
    let r = run(&caller(
        &["module:call:rec"],
        vec![rec],
        "rec",
        "recurse rec 20",
    ));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    // Depth 1 is the first callee; the call from depth 8 is refused
    // with LIMIT (5).
    assert!(r.stdout.contains("rc=5 exit=-1"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("rc=0 exit=0").count(), 8, "{}", r.stdout);
}

#[test]
fn a_callee_shares_its_callers_deadline_and_fuel() {
    // A callee that spins forever is stopped at the caller's deadline.
    let spinner = module("spinner", &wat("spin.wat"), None);
    let mut i = caller(
        &["module:call:spinner"],
        vec![spinner.clone()],
        "spinner",
        "",
    );
    i.limits.wall_time = Duration::from_millis(300);
    let t = Instant::now();
    let r = run(&i);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);

    // A callee burns the caller's fuel: a long loop exhausts it.
    let counter = module("counter", &wat("count.wat"), None);
    let mut i = caller(&["module:call:counter"], vec![counter], "counter", "");
    i.fuel = Some(20_000_000);
    let r = run(&i);
    assert_eq!(
        r.outcome.status,
        Status::CpuLimit,
        "{:?} {}",
        r.outcome,
        r.stdout
    );
    assert_eq!(r.outcome.fuel_consumed, Some(20_000_000));
}

#[test]
fn a_callees_stderr_counts_against_its_callers_output_limit() {
    // The callee complains on stderr (279 bytes): forwarded to the
    // caller's stderr, under the caller's cap.
    let talker = module("talker", &rust("hostcall"), None);
    let input = "x".repeat(250);
    let mut i = caller(&["module:call:talker"], vec![talker], "talker", &input);
    i.limits.output_bytes = 1000;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert!(
        r.stderr.starts_with("hostcall: unknown command"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "rc=0 exit=2\n");
    // With room for the callee's stderr but not for the caller's own
    // line after it, the caller is stopped at its limit.
    i.limits.output_bytes = 285;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::OutputLimit, "{:?}", r.outcome);
    assert!(r.outcome.truncated);
    assert!(r.outcome.stdout_bytes + r.outcome.stderr_bytes <= 285);
}
