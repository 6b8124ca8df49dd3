//! The `log` host capability (`log:write`): records in the outcome,
//! levels, caps, redaction, and no link at all without the grant.
use crate::common::*;
use warden_core::{LogLevel, Status};

#[test]
fn granted_records_are_kept_in_order_with_their_levels() {
    let mut i = inv(&rust("hostlog"), &["2:hello", "3:careful", "0:fine detail"]);
    i.capabilities = caps(&["log:write"]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert_eq!(r.stdout, "rc=0\nrc=0\nrc=0\n");
    let got: Vec<(LogLevel, &str)> = r
        .outcome
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (LogLevel::Info, "hello"),
            (LogLevel::Warn, "careful"),
            (LogLevel::Trace, "fine detail")
        ]
    );
    assert!(!r.outcome.logs_truncated);
    assert!(r.outcome.violations.is_empty());
}

#[test]
fn without_log_write_the_log_function_is_not_even_linked() {
    let r = run(&inv(&rust("hostlog"), &["2:hello"]));
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    assert_eq!(r.outcome.exit_status(), 126);
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden.log"), "{error}");
    assert!(error.contains("log:write"), "{error}");
    // It never started: nothing printed, nothing logged.
    assert_eq!(r.stdout, "");
    assert!(r.outcome.logs.is_empty());
    // Another grant of another family does not link it either.
    let mut i = inv(&rust("hostlog"), &["2:hello"]);
    i.capabilities = caps(&["kv:write:*", "clock:read"]);
    assert_eq!(run(&i).outcome.exit_code, Some(126));
}

#[test]
fn messages_are_redacted() {
    let mut i = inv(
        &rust("hostlog"),
        &["2:token=hunter2; again hunter2", "4:no secret"],
    );
    i.capabilities = caps(&["log:write"]);
    i.redact = vec!["hunter2".into()];
    let r = run(&i);
    assert_eq!(
        r.outcome.logs[0].message,
        "token=[REDACTED]; again [REDACTED]"
    );
    assert_eq!(r.outcome.logs[1].message, "no secret");
    assert_eq!(r.outcome.logs[1].level, LogLevel::Error);
}

#[test]
fn records_and_messages_are_capped() {
    let mut i = inv(&rust("hostlog"), &["flood:300"]);
    i.capabilities = caps(&["log:write"]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    // Past the cap the call still succeeds; the record is dropped.
    assert_eq!(r.stdout, "rc=0\n");
    assert_eq!(r.outcome.logs.len(), 256);
    assert!(r.outcome.logs_truncated);

    let mut i = inv(&rust("hostlog"), &["big:10000"]);
    i.capabilities = caps(&["log:write"]);
    let r = run(&i);
    let message = &r.outcome.logs[0].message;
    assert!(message.len() <= 4096 + "…".len(), "{}", message.len());
    assert!(message.ends_with('…'));
    assert!(r.outcome.logs_truncated);
}

#[test]
fn bad_arguments_are_status_codes_not_traps() {
    let mut i = inv(&wat("log_bad_pointer.wat"), &[]);
    i.capabilities = caps(&["log:write"]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    // INVALID (3) for the pointer past the memory, INVALID for level 9.
    assert_eq!(r.outcome.exit_code, Some(6));
    assert!(r.outcome.logs.is_empty());
}
