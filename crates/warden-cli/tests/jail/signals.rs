//! Warden interrupted mid-run: the report is still written and the jail is gone.

use std::time::Duration;

use crate::common::{cgroup_dirs, kill_all, unique, wait_for_process, wait_gone, TempDir};

fn interrupted(signal: &str) {
    let t = TempDir::new(&format!("sig-{signal}"));
    let marker = unique(&format!("sig{signal}"));
    let running = t
        .run([
            "--",
            "python3",
            "-c",
            "import time; time.sleep(60)",
            &marker,
        ])
        .deadline(Duration::from_secs(20))
        .spawn();
    let started = wait_for_process(&marker, Duration::from_secs(10));
    running.signal(signal);
    let out = running.wait();
    let left = wait_gone(&marker, Duration::from_secs(2));
    kill_all(&left);
    assert!(started, "the jailed program never started\n{}", out.ctx());
    assert!(
        left.is_empty(),
        "the jail outlived warden's SIG{signal}: {left:?}\n{}",
        out.ctx()
    );
    assert_eq!(
        out.status(),
        "error",
        "report status after SIG{signal}\n{}",
        out.ctx()
    );
    assert!(
        out.report()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the report does not say warden was interrupted\n{}",
        out.ctx()
    );
    assert_ne!(
        out.code,
        0,
        "warden exited 0 after SIG{signal}\n{}",
        out.ctx()
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "warden took {:?} to stop\n{}",
        out.elapsed,
        out.ctx()
    );
}

#[test]
fn sigterm_mid_run_writes_report_and_ends_jail() {
    interrupted("TERM");
}

#[test]
fn sigint_mid_run_writes_report_and_ends_jail() {
    interrupted("INT");
}

#[test]
fn sigkill_mid_run_kills_jail_and_next_run_cleans_up() {
    let t = TempDir::new("sig-kill");
    let marker = unique("sigkill");
    let running = t
        .run([
            "--memory",
            "64MiB",
            "--",
            "python3",
            "-c",
            "import time; time.sleep(60)",
            &marker,
        ])
        .deadline(Duration::from_secs(20))
        .spawn();
    let pid = running.pid();
    let started = wait_for_process(&marker, Duration::from_secs(10));
    running.signal("KILL");
    let out = running.wait();
    assert!(started, "the jailed program never started\n{}", out.ctx());
    let left = wait_gone(&marker, Duration::from_secs(3));
    kill_all(&left);
    assert!(
        left.is_empty(),
        "the jailed program survived SIGKILL of warden: {left:?}"
    );

    // Stale per-run state of the killed warden: cgroups named after its pid.
    let prefix = format!("{pid}-");
    let stale = || {
        cgroup_dirs(&|name, path| {
            name.starts_with(&prefix)
                && path
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == "warden")
        })
    };
    let before = stale();
    let next = t.run(["--", "true"]).go();
    next.expect_ok("the run after a SIGKILLed one");
    let after = stale();
    assert!(
        after.is_empty(),
        "stale cgroups of the killed warden (pid {pid}) survive the next run: {after:?} (before it: {before:?})\n{}",
        next.ctx()
    );
}
