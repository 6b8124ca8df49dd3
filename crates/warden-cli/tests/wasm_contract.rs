//! `warden run` / `warden compile` with WebAssembly, held to the same
//! contract as the jail (docs/report.md, README "Exit status"): the real
//! binaries (`warden`, which execs `warden-wasm`), a compile cache of each
//! test's own.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo, rust_guest as rust, warden_bin, TempDir};

fn wat(name: &str) -> String {
    repo()
        .join("tests-guests/wat")
        .join(name)
        .display()
        .to_string()
}

/// The compile cache of a test: inside its temporary directory.
fn cache(t: &TempDir) -> String {
    t.root.join("cache").display().to_string()
}

/// SIGTERM, SIGINT and SIGHUP sent to a `warden run` of a guest that would
/// spin for 30 s: it stops at once, writes its report (status `error`, the
/// signal, "interrupted by signal N") and exits 128+N, as the jail does.
#[test]
fn a_termination_signal_mid_run_writes_the_report_and_exits_128_plus_n() {
    for (name, number) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        let t = TempDir::new(&format!("wasm-sig-{name}"));
        let running = t
            .run(["--wall-time", "30s", &wat("spin.wat")])
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .deadline(Duration::from_secs(40))
            .spawn();
        // Past start-up and compiling: the guest is spinning.
        std::thread::sleep(Duration::from_millis(1500));
        let sent = Instant::now();
        running.signal(name);
        let out = running.wait();
        let stopped = sent.elapsed();
        out.expect_code(128 + number, &format!("SIG{name}"))
            .expect_status("error", &format!("SIG{name}"));
        let report = out.report();
        assert_eq!(report["signal"], number, "SIG{name}\n{}", out.ctx());
        assert_eq!(
            report["error"],
            format!("interrupted by signal {number}"),
            "SIG{name}\n{}",
            out.ctx()
        );
        assert_eq!(report["backend"], "wasm", "{}", out.ctx());
        assert!(
            stopped < Duration::from_secs(2),
            "SIG{name}: took {stopped:?} to stop\n{}",
            out.ctx()
        );
    }
}

/// A SIGTERM that arrives before any backend watches for it (here it is
/// sent at once, to a warden started with the signal blocked, as some
/// process managers do) is kept pending and still ends the run with a
/// report, for the jail and for WebAssembly (whose handler used to leave it
/// blocked: the run went on to its wall clock).
#[test]
fn an_early_termination_signal_is_not_lost() {
    for (tag, program) in [("jail", vec!["--", "sleep", "20"]), ("wasm", vec![])] {
        let t = TempDir::new(&format!("early-sig-{tag}"));
        let report = t.report_path();
        let spin = wat("spin.wat");
        let mut argv: Vec<String> = vec![
            warden_bin().display().to_string(),
            "run".into(),
            "--wall-time".into(),
            "20s".into(),
            "--report".into(),
            report.display().to_string(),
        ];
        if program.is_empty() {
            argv.push(spin);
        } else {
            argv.extend(program.iter().map(|s| s.to_string()));
        }
        // python blocks SIGTERM, then becomes warden (same pid, mask kept).
        let started = Instant::now();
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); os.execv(sys.argv[1], sys.argv[1:])",
            ])
            .args(&argv)
            .env("WARDEN_CACHE_DIR", cache(&t))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once the process is warden (python blocked the signal first), or
        // already the `warden-wasm` it hands WebAssembly to (the mask, and
        // a pending signal, carry over that exec too): `warden` is that
        // binary for a millisecond only, which polling can miss.
        let exe = format!("/proc/{}/exe", child.id());
        let wardens: Vec<PathBuf> = [warden_bin(), warden_bin().with_file_name("warden-wasm")]
            .iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        while !std::fs::read_link(&exe).is_ok_and(|p| wardens.contains(&p)) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{tag}: no exec"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "{tag}: {status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{tag}: took {:?}",
            started.elapsed()
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(report["status"], "error", "{tag}: {report}");
        assert_eq!(report["signal"], 15, "{tag}: {report}");
    }
}

/// `warden run flood.wasm | head -c 10`: once the reader is gone the
/// guest's writes fail, their bytes still count, and the output limit
/// stops it — not its 30 s wall clock.
#[test]
fn a_closed_stdout_pipe_does_not_keep_a_flooding_guest_running() {
    let t = TempDir::new("wasm-closed-pipe");
    let report = t.report_path();
    let started = Instant::now();
    let mut child = Command::new(warden_bin())
        .args(["run", "--wall-time", "30s", "--report"])
        .arg(&report)
        .arg(wat("flood.wat"))
        .env("WARDEN_CACHE_DIR", cache(&t))
        .current_dir(t.work())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start warden");
    let mut out = child.stdout.take().unwrap();
    let mut head = [0u8; 10];
    out.read_exact(&mut head).expect("the guest's first bytes");
    assert_eq!(&head, b"xxxxxxxxxx");
    drop(out);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("warden did not end within 40 s of its reader going away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&report).expect("report written");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["status"], "output_limit", "{text}");
    assert_eq!(r["truncated"], true, "{text}");
    assert_eq!(status.code(), Some(137), "{text}");
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: {text}"
    );
}

/// `cd work && warden run --allow fs:read:./data readfile.wasm data/in.json`
/// reads the granted file by its relative path, as a jailed program would;
/// `..`, an ungranted sibling and the working directory itself stay out.
#[test]
fn a_relative_path_into_a_granted_directory_works() {
    let t = TempDir::new("wasm-relative");
    t.write("data/in.json", "{\"ok\": true}\n");
    t.write("other/x.json", "not granted\n");
    t.write("beside.json", "not granted either\n");
    t.write_root("outside.json", "outside\n");
    let readfile = rust("readfile");
    let read = |extra: &[&str], path: &str| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([readfile.clone(), path.to_string()]);
        t.run(args).env("WARDEN_CACHE_DIR", &cache(&t)).go()
    };
    for path in ["data/in.json", "./data/in.json"] {
        let out = read(&["--allow", "fs:read:./data"], path);
        out.expect_ok(path);
        assert_eq!(out.stdout, "{\"ok\": true}\n", "{}", out.ctx());
    }
    for path in [
        "other/x.json",
        "beside.json",
        "../outside.json",
        "data/../beside.json",
        "data/../../outside.json",
    ] {
        let out = read(&["--allow", "fs:read:./data"], path);
        out.expect_code(2, &format!("{path} must not be readable"));
        assert_eq!(out.stdout, "", "{path}\n{}", out.ctx());
    }
    // --workdir: relative to the working directory, not the caller's.
    let out = t
        .run([
            "--workdir",
            "work",
            "--allow",
            "fs:read:work/data",
            &readfile,
            "data/in.json",
        ])
        .cwd(&t.root)
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_ok("--workdir");
    assert_eq!(out.stdout, "{\"ok\": true}\n", "{}", out.ctx());
}

/// A guest's exit code outside 0..=255 gives the exit status a native
/// process would (the low 8 bits); the report keeps the guest's value.
#[test]
fn exit_codes_beyond_a_byte_wrap_like_a_native_process() {
    let t = TempDir::new("wasm-exit");
    let module = rust("exitcode");
    for (code, status) in [(256, 0), (-1, 255), (300, 44), (7, 7)] {
        let out = t
            .run(["--", &module, &code.to_string()])
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .go();
        out.expect_code(status, &format!("proc_exit({code})"))
            .expect_status("exited", &format!("proc_exit({code})"));
        assert_eq!(out.report()["exit_code"], code, "{}", out.ctx());
    }
}

/// A module file that exists but cannot be read is "cannot execute" (126),
/// as the jail's failed exec; 127 only when it does not exist. Run as
/// nobody: root reads anything.
#[test]
fn an_unreadable_module_is_126_and_a_missing_one_127() {
    let t = TempDir::new("wasm-unreadable");
    t.open_to_everyone();
    let warden = t.private_warden();
    let full = t.root.join("warden-wasm");
    std::fs::copy(env!("CARGO_BIN_EXE_warden-wasm"), &full).unwrap();
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755)).unwrap();
    let module = t.path("locked.wat");
    std::fs::copy(wat("hello.wat"), &module).unwrap();
    std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o000)).unwrap();
    let run = |path: &str| {
        t.run([path])
            .bin(warden.clone())
            .user(65534)
            .env("WARDEN_CACHE_DIR", "")
            .go()
    };
    let out = run("locked.wat");
    out.expect_code(126, "unreadable module")
        .expect_status("error", "unreadable module");
    assert_eq!(out.report()["exit_code"], 126, "{}", out.ctx());
    let error = out.report()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("Permission denied"), "{}", out.ctx());
    let out = run("missing.wat");
    out.expect_code(127, "missing module")
        .expect_status("error", "missing module");
}

/// `warden compile` of something that is not a module names the file.
#[test]
fn a_compile_error_names_the_input_file() {
    let t = TempDir::new("wasm-compile-error");
    let garbage = wat("garbage.wasm");
    let out = t
        .raw([
            "compile",
            &garbage,
            "-o",
            &t.root.join("x.cwasm").display().to_string(),
        ])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_warden_error("compile garbage");
    assert!(
        out.stderr
            .contains(&format!(" {garbage}: invalid module: ")),
        "{}",
        out.ctx()
    );
    assert!(!out.stderr.contains("<bytes>"), "{}", out.ctx());
    assert!(!t.root.join("x.cwasm").exists());
}

/// Compile time grows with the square of the nesting depth (100k nested
/// blocks took two minutes): `warden compile` gives up at its --wall-time
/// (60 s by default) with exit 124 and one line, writing nothing.
#[test]
fn a_compile_that_takes_too_long_is_given_up() {
    let t = TempDir::new("wasm-compile-deadline");
    let depth = 30_000;
    let deep = t.write_root(
        "deep.wat",
        &format!(
            "(module (func (export \"_start\") {}{}))",
            "(block ".repeat(depth),
            ")".repeat(depth)
        ),
    );
    let out_path = t.root.join("deep.cwasm");
    let started = Instant::now();
    let out = t
        .raw([
            "compile",
            deep.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--wall-time",
            "300ms",
        ])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_code(124, "compile past its deadline");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.ctx());
    assert!(out.stderr.contains("--wall-time"), "{}", out.ctx());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!out_path.exists());
}

/// A `.cwasm` compiled for the other kind of engine (with or without fuel
/// metering) is refused with one line that says how to recompile it.
#[test]
fn a_cwasm_for_the_other_fuel_setting_says_how_to_recompile() {
    let t = TempDir::new("wasm-cwasm-fuel");
    let plain = t.root.join("plain.cwasm").display().to_string();
    let metered = t.root.join("metered.cwasm").display().to_string();
    let hello = wat("hello.wat");
    for args in [
        vec!["compile", &hello, "-o", &plain],
        vec!["compile", "--metered", &hello, "-o", &metered],
    ] {
        t.raw(args.clone())
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .go()
            .expect_code(0, &args.join(" "));
    }
    let run = |args: &[&str]| {
        t.run(args.iter().copied())
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .go()
    };
    run(&[&plain]).expect_ok("plain .cwasm without --fuel");
    run(&["--fuel", "10000000", &metered]).expect_ok("metered .cwasm with --fuel");

    let out = run(&["--fuel", "10000000", &plain]);
    out.expect_code(126, "plain .cwasm with --fuel");
    assert_eq!(
        out.stderr,
        format!(
            "warden: error: {plain}: invalid module: precompiled without fuel metering, so it cannot run with --fuel: recompile it with `warden compile --metered` (or run without --fuel)\n"
        ),
        "{}",
        out.ctx()
    );
    let out = run(&[&metered]);
    out.expect_code(126, "metered .cwasm without --fuel");
    assert_eq!(
        out.stderr,
        format!(
            "warden: error: {metered}: invalid module: precompiled with fuel metering (`warden compile --metered`), so it runs only with --fuel N: recompile it without `--metered` to run it without a fuel budget\n"
        ),
        "{}",
        out.ctx()
    );
}

/// A directory shown at `/` (`--allow fs:read:./fixtures --at /`), as the
/// WASI test suite and wasmtime's `--dir HOST::/` expect: the guest reads
/// its fixture by an absolute and by a relative path, and nothing else.
#[test]
fn a_grant_shown_at_the_root_serves_absolute_and_relative_paths() {
    let t = TempDir::new("wasm-at-root");
    t.write("fixtures/in.txt", "fixture at the root\n");
    t.write("beside.txt", "not granted\n");
    let readfile = rust("readfile");
    for path in ["/in.txt", "in.txt", "./in.txt"] {
        let out = t
            .run([
                "--allow",
                "fs:read:./fixtures",
                "--at",
                "/",
                &readfile,
                path,
            ])
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .go();
        out.expect_ok(path);
        assert_eq!(out.stdout, "fixture at the root\n", "{path}\n{}", out.ctx());
        assert_eq!(out.report()["views"][0]["at"], "/", "{}", out.ctx());
    }
    for path in ["/beside.txt", "../beside.txt", "/fixtures/in.txt"] {
        let out = t
            .run([
                "--allow",
                "fs:read:./fixtures",
                "--at",
                "/",
                &readfile,
                path,
            ])
            .env("WARDEN_CACHE_DIR", &cache(&t))
            .go();
        out.expect_code(2, &format!("{path} must not be readable"));
    }
    // Any other guest path too.
    let out = t
        .run([
            "--allow",
            "fs:read:./fixtures",
            "--at",
            "/srv/data",
            &readfile,
            "/srv/data/in.txt",
        ])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_ok("--at /srv/data");
}

/// A WebAssembly guest that reaches its memory limit, or the output limit,
/// has it in `limits_reached` and on stderr, as a jailed program does.
#[test]
fn wasm_limits_reached_are_reported_and_said() {
    let t = TempDir::new("wasm-reached");
    let out = t
        .run(["--memory", "8MiB", &wat("grow_bomb.wat")])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_status("memory_limit", "grow bomb");
    let reached = out.report()["limits_reached"].clone();
    assert_eq!(reached[0]["limit"], "memory", "{}", out.ctx());
    assert!(
        reached[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("8 MiB: memory growth refused"),
        "{}",
        out.ctx()
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("warden: memory limit 8 MiB reached")),
        "{}",
        out.ctx()
    );
    let out = t
        .run(["--output-limit", "64KiB", "--quiet", &wat("flood.wat")])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_status("output_limit", "flood");
    assert_eq!(out.report()["limits_reached"][0]["limit"], "output");
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.contains("limit 64 KiB reached")),
        "--quiet\n{}",
        out.ctx()
    );
}

/// A guest's write past `--file-size` is refused (EFBIG) and is in
/// `limits_reached` with its count, as in the jail.
#[test]
fn a_wasm_write_past_the_file_size_limit_is_a_reached_limit() {
    let t = TempDir::new("wasm-fsize");
    t.mkdir("out");
    let text = "x".repeat(4096);
    let out = t
        .run([
            "--file-size",
            "1KiB",
            "--allow",
            "fs:write:./out",
            &rust("writefile"),
            "out/big.txt",
            &text,
        ])
        .env("WARDEN_CACHE_DIR", &cache(&t))
        .go();
    out.expect_code(2, "the write fails");
    let reached = &out.report()["limits_reached"];
    let entry = reached
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["limit"] == "file_size")
        .unwrap_or_else(|| panic!("no file_size entry\n{}", out.ctx()));
    assert!(entry["count"].as_u64().unwrap() >= 1, "{}", out.ctx());
    assert!(
        entry["detail"].as_str().unwrap().starts_with("1 KiB: "),
        "{}",
        out.ctx()
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("warden: file size limit 1 KiB reached")),
        "{}",
        out.ctx()
    );
}
