//! `POST /v1/execute` with `test_cases`: the request prepared once (its
//! files written, its RBAC asked, a processor resolved), then each case
//! run in a fresh sandbox of its own — its own `warden` child and jail, or
//! for WebAssembly in the service its own instance of the module compiled
//! once — one after the other, in the request's order. Each run is a run
//! as any other: its own report, secrets leased and redacted, ledger
//! entry. Its verdict is read from its report and its stdout.

use std::sync::Arc;

use crate::api::{encode_output, Case, Plan, TestCaseResult, TestCasesResponse, Verdict};
use crate::error::ApiError;
use crate::quota::Slot;
use crate::runner::{Finished, RunError};
use crate::server::{account, ledger_index, run_error, Shared};

/// Whether `stdout` is what `expected` says: equal once trailing
/// whitespace (space, tab, CR, LF, vertical tab, form feed) is taken off
/// the end of each; everything else, leading and inner whitespace
/// included, must match byte for byte.
pub fn same_output(stdout: &[u8], expected: &[u8]) -> bool {
    trim_end(stdout) == trim_end(expected)
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// A case's verdict from its run's report (`status`, `exit_code`) and
/// what it wrote on stdout.
pub fn verdict(report: &serde_json::Value, stdout: &[u8], expected: &[u8]) -> Verdict {
    let status = report.get("status").and_then(|s| s.as_str()).unwrap_or("");
    match status {
        "exited" => match report.get("exit_code").and_then(|c| c.as_i64()) {
            Some(0) if same_output(stdout, expected) => Verdict::Passed,
            Some(0) => Verdict::WrongAnswer,
            _ => Verdict::RuntimeError,
        },
        // Killed by a signal Warden did not send, or it tried something
        // denied (a system call, an ungranted host call, a WebAssembly
        // trap): the program failed, whatever it printed.
        "signaled" | "violation" => Verdict::RuntimeError,
        "timeout" | "cpu_limit" => Verdict::TimeLimit,
        "memory_limit" => Verdict::MemoryLimit,
        "output_limit" => Verdict::OutputLimit,
        "refused" => Verdict::Refused,
        _ => Verdict::Error,
    }
}

/// The result of a case that ran.
fn ran(case: &Case, finished: Finished) -> TestCaseResult {
    let verdict = verdict(&finished.report, &finished.stdout, &case.expected_stdout);
    let (stdout, stdout_encoding) = encode_output(finished.stdout);
    let (stderr, stderr_encoding) = encode_output(finished.stderr);
    let report = finished.report;
    TestCaseResult {
        name: case.name.clone(),
        verdict,
        stdout,
        stdout_encoding,
        stderr,
        stderr_encoding,
        exit_code: report.get("exit_code").and_then(|c| c.as_i64()),
        time_ms: report.get("wall_ms").and_then(|c| c.as_u64()),
        ledger_index: ledger_index(&report),
        report: Some(report),
    }
}

/// The result of a case that could not be run: `error`, no report,
/// stderr saying why.
fn not_run(case: &Case, why: &str) -> TestCaseResult {
    let (stderr, stderr_encoding) =
        encode_output(format!("warden: {}\n", warden_core::printable(why)).into_bytes());
    let (stdout, stdout_encoding) = encode_output(Vec::new());
    TestCaseResult {
        name: case.name.clone(),
        verdict: Verdict::Error,
        stdout,
        stdout_encoding,
        stderr,
        stderr_encoding,
        exit_code: None,
        time_ms: None,
        report: None,
        ledger_index: None,
    }
}

/// The answer: the results and their summary.
pub fn summarize(results: Vec<TestCaseResult>) -> TestCasesResponse {
    let passed = results
        .iter()
        .filter(|r| r.verdict == Verdict::Passed)
        .count() as u64;
    let verdict = results
        .iter()
        .map(|r| r.verdict)
        .find(|v| *v != Verdict::Passed)
        .unwrap_or(Verdict::Passed);
    TestCasesResponse {
        verdict,
        passed,
        total: results.len() as u64,
        test_cases: results,
    }
}

/// Runs every case of an authorized `plan` for the principal whose key is
/// `key`, one after the other; each run is counted and its CPU charged to
/// `slot`'s tenant. Once the service's shutdown deadline has passed, the
/// cases not yet started are not run (verdict `error`). `Err` only when
/// the request could not be prepared at all.
pub(crate) async fn run(
    state: &Shared,
    plan: Plan,
    key: &str,
    actor: &warden_engine::identity::Actor,
    slot: Option<&Slot>,
    in_process: bool,
) -> Result<TestCasesResponse, ApiError> {
    let runner = &state.settings.runner;
    let plan = Arc::new(plan);
    let (dir, files) = runner.prepare_files(&plan).map_err(run_error)?;
    // Shared with the blocking threads of in-process runs: the directory
    // stays until the last of them is done with it.
    let dir = Arc::new(dir);
    let mut results = Vec::with_capacity(plan.cases.len());
    for (i, case) in plan.cases.iter().enumerate() {
        if *state.stop.borrow() {
            results.push(not_run(case, "not run: the service is shutting down"));
            continue;
        }
        let finished = if in_process {
            let (shared, plan, dir, files, actor) = (
                Arc::clone(state),
                Arc::clone(&plan),
                Arc::clone(&dir),
                files.clone(),
                actor.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let _dir = dir;
                let Some(inproc) = shared.inproc.as_ref() else {
                    return Err(RunError::Unrecorded("in-process runs are off".into()));
                };
                inproc.run_in(&files, &shared.gates, &plan, &plan.cases[i].stdin, &actor)
            })
            .await
            .unwrap_or_else(|e| {
                Err(RunError::Unrecorded(format!(
                    "the run's thread failed: {e}"
                )))
            })
        } else {
            runner
                .run_prepared(
                    &plan,
                    &dir,
                    &files,
                    i,
                    &case.stdin,
                    key,
                    state.stop.clone(),
                    None,
                )
                .await
        };
        match finished {
            Ok(finished) => {
                account(&finished.report, slot);
                results.push(ran(case, finished));
            }
            Err(e) => {
                tracing::warn!("test case {i} could not be run: {e}");
                results.push(not_run(case, &e.to_string()));
            }
        }
    }
    Ok(summarize(results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_matches_once_trailing_whitespace_is_off() {
        assert!(same_output(b"42\n", b"42"));
        assert!(same_output(b"a b\r\n\n \t", b"a b"));
        assert!(same_output(b"", b"\n"));
        assert!(!same_output(b" 42", b"42"));
        assert!(!same_output(b"a  b", b"a b"));
        assert!(!same_output(b"1\n2\n", b"1 2"));
        assert!(!same_output(b"42\n", b"43\n"));
    }

    #[test]
    fn verdicts_follow_the_report() {
        let v = |status: &str, code: Option<i64>, out: &[u8]| {
            verdict(&json!({"status": status, "exit_code": code}), out, b"ok\n")
        };
        assert_eq!(v("exited", Some(0), b"ok"), Verdict::Passed);
        assert_eq!(v("exited", Some(0), b"no"), Verdict::WrongAnswer);
        assert_eq!(v("exited", Some(3), b"ok"), Verdict::RuntimeError);
        assert_eq!(v("signaled", None, b"ok"), Verdict::RuntimeError);
        assert_eq!(v("violation", Some(0), b"ok"), Verdict::RuntimeError);
        assert_eq!(v("timeout", None, b""), Verdict::TimeLimit);
        assert_eq!(v("cpu_limit", None, b""), Verdict::TimeLimit);
        assert_eq!(v("memory_limit", Some(0), b"ok"), Verdict::MemoryLimit);
        assert_eq!(v("output_limit", None, b""), Verdict::OutputLimit);
        assert_eq!(v("refused", None, b""), Verdict::Refused);
        assert_eq!(v("error", None, b""), Verdict::Error);
        assert_eq!(v("something new", None, b""), Verdict::Error);
    }

    #[test]
    fn the_summary_is_the_first_verdict_that_is_not_passed() {
        let case = Case {
            name: None,
            stdin: Vec::new(),
            expected_stdout: Vec::new(),
        };
        let with = |v: Verdict| TestCaseResult {
            verdict: v,
            ..not_run(&case, "x")
        };
        let s = summarize(vec![
            with(Verdict::Passed),
            with(Verdict::TimeLimit),
            with(Verdict::WrongAnswer),
        ]);
        assert_eq!((s.verdict, s.passed, s.total), (Verdict::TimeLimit, 1, 3));
        let s = summarize(vec![with(Verdict::Passed), with(Verdict::Passed)]);
        assert_eq!((s.verdict, s.passed, s.total), (Verdict::Passed, 2, 2));
    }
}
