//! A process whose backend watches termination signals
//! (`WasmConfig::interrupt_on_signals`, what `warden run` turns on): SIGINT,
//! SIGTERM, SIGHUP stop the run at once — on the caller's stack, on a fiber
//! blocked in a host call, on a metered engine — and the outcome says so
//! (status `error`, the signal, "interrupted by signal N"), so that the
//! CLI can still write its report.
//!
//! Each case runs in a child process (this test binary again, selected by
//! an environment variable): the signal goes to the child only. The child
//! says `READY` on stderr just before the run, prints the outcome and exits
//! without returning to the test harness.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use warden_core::Invocation;
use warden_wasm::{Input, Output, RunIo, WasmBackend, WasmConfig};

const CHILD: &str = "WARDEN_SIGNALS_CHILD";

fn watching_backend() -> WasmBackend {
    WasmBackend::with_config(WasmConfig {
        interrupt_on_signals: true,
        cache_dir: None,
        ..WasmConfig::default()
    })
    .expect("wasm backend")
}

/// In the child: runs `i` (a guest that would run for 20 s) twice — the
/// second run after the signal came — and prints both outcomes.
fn child(mut i: Invocation, sync: bool) -> ! {
    let backend = watching_backend();
    i.limits.wall_time = Duration::from_secs(20);
    let io = RunIo {
        stdin: Input::Empty,
        stdout: Output::Discard,
        stderr: Output::Discard,
    };
    let module = backend
        .prepare(
            &WasmBackend::module_path(&i).unwrap(),
            backend.engine_kind(&i),
        )
        .expect("prepare");
    assert_eq!(
        backend.runs_on_caller_stack(&module, &i, &io).unwrap(),
        sync,
        "the run takes the other path than this case is for"
    );
    eprintln!("READY");
    for n in 1..=2 {
        let t = Instant::now();
        let o = backend.run_with_io(&i, &io).expect("backend runs");
        eprintln!(
            "OUTCOME{n} status={} signal={} took_ms={} error={}",
            o.status.as_str(),
            o.signal.unwrap_or(0),
            t.elapsed().as_millis(),
            o.error.unwrap_or_default().replace(' ', "_"),
        );
    }
    std::process::exit(0)
}

/// In the parent: runs `test` as a child, sends it `signal` (kill(1) name)
/// once it is running its guest, returns the child's outcome lines.
fn parent(test: &str, signal: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let (tx, rx) = mpsc::channel();
    let err = c.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l == "READY" => break true,
            Ok(l) => lines.push(l),
            Err(_) => break false,
        }
    };
    assert!(ready, "the child did not start its run: {lines:?}");
    // Let the guest get going (into its loop, or its host call).
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(c.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    loop {
        if let Some(status) = c.try_wait().expect("wait") {
            lines.extend(rx.iter());
            assert!(
                status.success(),
                "the child did not survive SIG{signal}: {status}\n{lines:#?}"
            );
            let outcomes: Vec<String> = lines
                .into_iter()
                .filter(|l| l.starts_with("OUTCOME"))
                .collect();
            assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
            return outcomes;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = c.kill();
            panic!("the run did not stop within 10 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

fn expect_interrupted(lines: &[String], signal: i32) {
    for line in lines {
        assert_eq!(field(line, "status"), "error", "{line}");
        assert_eq!(field(line, "signal"), signal.to_string(), "{line}");
        assert_eq!(
            field(line, "error"),
            format!("interrupted_by_signal_{signal}"),
            "{line}"
        );
    }
    // The first run was stopped promptly (it would have run 20 s); the
    // second, started after the signal, does not run at all.
    let took: u64 = field(&lines[0], "took_ms").parse().unwrap();
    assert!(took < 2000, "{}", lines[0]);
    let took: u64 = field(&lines[1], "took_ms").parse().unwrap();
    assert!(took < 50, "{}", lines[1]);
}

#[test]
fn sigterm_stops_a_run_on_the_callers_stack() {
    if std::env::var_os(CHILD).is_some() {
        child(inv(&wat("spin.wat"), &[]), true);
    }
    let lines = parent("sigterm_stops_a_run_on_the_callers_stack", "TERM");
    expect_interrupted(&lines, 15);
}

#[test]
fn sigint_stops_a_run_blocked_in_a_host_call() {
    if std::env::var_os(CHILD).is_some() {
        let mut i = inv(&wat("sleep.wat"), &[]);
        i.capabilities = caps(&["clock:read"]);
        child(i, false);
    }
    let lines = parent("sigint_stops_a_run_blocked_in_a_host_call", "INT");
    expect_interrupted(&lines, 2);
}

#[test]
fn sighup_stops_a_metered_run() {
    if std::env::var_os(CHILD).is_some() {
        let mut i = inv(&wat("spin.wat"), &[]);
        i.fuel = Some(u64::MAX / 2);
        child(i, false);
    }
    let lines = parent("sighup_stops_a_metered_run", "HUP");
    expect_interrupted(&lines, 1);
}
