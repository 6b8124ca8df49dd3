//! A caller that stops reading its stdout cannot hold a run past its
//! deadline: the guest's writes wait for room in the writer queue without
//! blocking the run's thread, so the deadline ends the run and its outcome
//! is returned (the CLI then writes the report).
//!
//! Each case runs in a child process (this test binary again, selected by
//! an environment variable) whose stdout is a pipe the parent never reads.
//! The child reports its outcome on stderr and exits without returning to
//! the test harness (which would itself block writing to the full pipe).
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_core::Status;
use warden_wasm::{Input, Output, RunIo};

const CHILD: &str = "WARDEN_OUTPUT_PIPE_CHILD";

/// In the child: runs `guest` writing to this process's own stdout, with
/// `wall_ms` of wall-clock time, and prints the outcome on stderr.
fn child(guest: &std::path::Path, args: &[&str], wall_ms: u64) -> ! {
    let mut i = inv(guest, args);
    i.limits.wall_time = Duration::from_millis(wall_ms);
    let io = RunIo {
        stdin: Input::Empty,
        stdout: Output::Inherit,
        stderr: Output::Discard,
    };
    let t = Instant::now();
    let o = backend().run_with_io(&i, &io).expect("backend runs");
    eprintln!(
        "OUTCOME status={} took_ms={} stdout_bytes={} warnings={:?}",
        o.status.as_str(),
        t.elapsed().as_millis(),
        o.stdout_bytes,
        o.warnings
    );
    std::process::exit(0)
}

/// In the parent: runs this test again as a child with an unread pipe as
/// stdout; returns its outcome line. Fails if the child is not done within
/// `limit`.
fn parent(test: &str, limit: Duration) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    // Hold the read end of stdout open, never read it.
    let _unread = c.stdout.take();
    let t = Instant::now();
    loop {
        if let Some(status) = c.try_wait().expect("wait") {
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(status.success(), "child failed: {status}\n{err}");
            return err
                .lines()
                .find(|l| l.starts_with("OUTCOME"))
                .unwrap_or_else(|| panic!("no outcome from the child:\n{err}"))
                .to_string();
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("the run did not end within {limit:?} with a full stdout pipe");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

#[test]
fn a_guest_flooding_an_unread_pipe_stops_at_its_deadline() {
    if std::env::var_os(CHILD).is_some() {
        child(&wat("flood.wat"), &[], 300);
    }
    let line = parent(
        "a_guest_flooding_an_unread_pipe_stops_at_its_deadline",
        Duration::from_secs(20),
    );
    assert_eq!(field(&line, "status"), Status::Timeout.as_str(), "{line}");
    let took: u64 = field(&line, "took_ms").parse().unwrap();
    assert!((300..1300).contains(&took), "{line}");
    // The pipe (64 KiB) and the queue (1 MiB) filled, then the guest waited.
    let written: u64 = field(&line, "stdout_bytes").parse().unwrap();
    assert!(written >= 1 << 20, "{line}");
}

#[test]
fn output_left_in_the_queue_does_not_hold_the_outcome_back() {
    if std::env::var_os(CHILD).is_some() {
        // fib prints one short line: it fits the queue, the guest exits,
        // and the line can never be delivered (the pipe is already full).
        // Compile hello first (output discarded, no deadline to speak of):
        // on a cold cache a debug build's compile alone can outlast the
        // 500 ms the timed run gets, which is not what this test measures.
        let mut warm = inv(&rust("hello"), &[]);
        warm.limits.wall_time = Duration::from_secs(60);
        let quiet = RunIo {
            stdin: Input::Empty,
            stdout: Output::Discard,
            stderr: Output::Discard,
        };
        let o = backend().run_with_io(&warm, &quiet).expect("backend runs");
        assert_eq!(o.status, Status::Exited, "{o:?}");
        // Fill the pipe first with a guest that is stopped by its deadline.
        let mut i = inv(&wat("flood.wat"), &[]);
        i.limits.wall_time = Duration::from_millis(200);
        i.limits.output_bytes = 96 << 10;
        let io = RunIo {
            stdin: Input::Empty,
            stdout: Output::Inherit,
            stderr: Output::Discard,
        };
        let o = backend().run_with_io(&i, &io).expect("backend runs");
        assert_eq!(o.status, Status::OutputLimit, "{o:?}");
        child(&rust("hello"), &[], 500);
    }
    // Build the guests here, before the child's clock starts: on a cold
    // checkout tests-guests/build.sh alone outlasts the child's limit.
    rust("hello");
    let line = parent(
        "output_left_in_the_queue_does_not_hold_the_outcome_back",
        Duration::from_secs(20),
    );
    assert_eq!(field(&line, "status"), Status::Exited.as_str(), "{line}");
    let took: u64 = field(&line, "took_ms").parse().unwrap();
    // Waited for delivery until the deadline (500 ms), not forever.
    assert!((400..1500).contains(&took), "{line}");
    assert!(line.contains("still waiting for the caller"), "{line}");
}

/// `warden run flood.wasm | head -c 10`: the caller's stdout is a pipe
/// whose reader is gone. The guest's writes fail (EPIPE) and their bytes
/// still count against the output limit, so a guest that ignores the
/// errors is stopped by that limit, not kept running until its deadline.
#[test]
fn a_guest_flooding_a_closed_pipe_is_stopped_by_the_output_limit() {
    if std::env::var_os(CHILD).is_some() {
        // The harness has printed its banner; from here on only the guest
        // writes to stdout.
        eprintln!("READY");
        child(&wat("flood.wat"), &[], 20_000);
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe)
        .args([
            "a_guest_flooding_a_closed_pipe_is_stopped_by_the_output_limit",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut out = c.stdout.take().unwrap();
    let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "the child ended before its run: {lines:?}");
        if line.trim() == "READY" {
            break;
        }
        lines.push(line);
    }
    // Like `head -c 10`: read a little, then go away.
    let mut head = [0u8; 10];
    // (The harness's banner comes first: what is read does not matter.)
    out.read_exact(&mut head).unwrap();
    drop(out);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = c.kill();
            panic!("the run was not stopped within 30 s of its reader going away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "child failed: {status}\n{rest}");
    let line = rest
        .lines()
        .find(|l| l.starts_with("OUTCOME"))
        .unwrap_or_else(|| panic!("no outcome from the child:\n{rest}"));
    assert_eq!(
        field(line, "status"),
        Status::OutputLimit.as_str(),
        "{line}"
    );
    let took: u64 = field(line, "took_ms").parse().unwrap();
    assert!(took < 10_000, "{line}");
    // Every byte counted, written or dropped: the whole default limit.
    let counted: u64 = field(line, "stdout_bytes").parse().unwrap();
    assert_eq!(
        counted,
        warden_core::EffectiveLimits::default().output_bytes,
        "{line}"
    );
}
