//! Running modules: output, exit codes, arguments and environment, stdin,
//! precompiled modules, engines, deterministic mode.
use crate::common::*;
use warden_core::{Backend, Status};
use warden_policy::Capability;
use warden_wasm::{Input, RunIo, WasmBackend, WasmConfig};

#[test]
fn rust_hello_prints_and_exits_zero() {
    let r = run(&inv(&rust("hello"), &[]));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert_eq!(r.stdout, "hello from rust\n");
    assert_eq!(r.outcome.stdout_bytes, 16);
    assert_eq!(r.outcome.stderr_bytes, 0);
    assert!(!r.outcome.truncated);
    assert!(r.outcome.instantiate_us.is_some());
    assert_eq!(r.outcome.fuel_consumed, None);
    assert!(r.outcome.peak_memory_bytes >= 64 << 10, "{:?}", r.outcome);
    assert_eq!(r.outcome.enforcement["memory"], "wasm_limiter");
    assert_eq!(r.outcome.enforcement["wall_time"], "epoch");
    assert_eq!(r.outcome.signal, None);
}

#[test]
fn wat_text_is_accepted() {
    let r = run(&inv(&wat("hello.wat"), &[]));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from wat\n");
}

#[test]
fn exit_codes_propagate() {
    for code in [0, 1, 3, 42, 255] {
        let r = run(&inv(&rust("exitcode"), &[&code.to_string()]));
        assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
        assert_eq!(r.outcome.exit_code, Some(code));
        assert_eq!(r.outcome.exit_status(), code);
    }
    let r = run(&inv(&wat("exit7.wat"), &[]));
    assert_eq!(r.outcome.status, Status::Exited);
    assert_eq!(r.outcome.exit_code, Some(7));
}

#[test]
fn arguments_and_granted_environment_only() {
    let module = rust("env");
    let mut i = inv(&module, &["one", "two words"]);
    i.env = vec![("GREETING".into(), "hi".into())];
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    let expected = format!(
        "arg:{}\narg:one\narg:two words\nGREETING=hi\n",
        module.display()
    );
    assert_eq!(r.stdout, expected);

    // Nothing of the host's environment leaks in.
    assert!(std::env::var_os("PATH").is_some());
    let r = run(&inv(&module, &[]));
    assert_eq!(r.stdout, format!("arg:{}\n", module.display()));
}

#[test]
fn stdin_reaches_the_guest() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let i = inv(&rust("cat"), &[]);
    let (io, out, _err) = RunIo::captured(Input::Bytes(data.clone()));
    let o = backend().run_with_io(&i, &io).unwrap();
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out.contents(), data);
    assert_eq!(o.stdout_bytes, data.len() as u64);

    let r = run_with(&i, Input::Empty);
    assert_eq!(r.outcome.status, Status::Exited);
    assert_eq!(r.stdout, "");
}

#[test]
fn relative_module_paths_resolve_against_the_workdir() {
    let module = rust("hello");
    let mut i = inv(&module, &[]);
    i.workdir = module.parent().unwrap().to_path_buf();
    i.argv[0] = "hello.wasm".into();
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from rust\n");
}

#[test]
fn fuel_is_metered_when_asked() {
    let mut i = inv(&rust("fib"), &["20"]);
    i.fuel = Some(100_000_000);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "6765\n");
    let used = r.outcome.fuel_consumed.expect("fuel_consumed");
    assert!(used > 10_000 && used < 100_000_000, "{used}");
    assert_eq!(r.outcome.enforcement["fuel"], "wasm_fuel");
    assert!(backend().engine_kind(&i).metered);
}

#[test]
fn precompiled_modules_run_and_must_match_the_engine() {
    let dir = TempDir::new("cwasm");
    let bytes = std::fs::read(wat("hello.wat")).unwrap();
    let plain = dir.path().join("hello.cwasm");
    std::fs::write(&plain, backend().precompile(&bytes, false).unwrap()).unwrap();
    let r = run(&inv(&plain, &[]));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from wat\n");

    // Compiled without fuel, run with fuel: refused, with the reason.
    let mut metered = inv(&plain, &[]);
    metered.fuel = Some(1_000_000);
    let r = run(&metered);
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    assert!(
        r.outcome.error.as_deref().unwrap_or("").contains("fuel"),
        "{:?}",
        r.outcome.error
    );

    // A .cwasm must be one; a precompiled module must be named .cwasm.
    let fake = dir.path().join("fake.cwasm");
    std::fs::copy(wat("hello.wat"), &fake).unwrap();
    let r = run(&inv(&fake, &[]));
    assert_eq!(r.outcome.status, Status::Error);
    assert_eq!(r.outcome.exit_code, Some(126));
    let renamed = dir.path().join("renamed.wasm");
    std::fs::copy(&plain, &renamed).unwrap();
    let r = run(&inv(&renamed, &[]));
    assert_eq!(r.outcome.status, Status::Error);
    assert_eq!(r.outcome.exit_code, Some(126));
}

#[test]
fn a_rewritten_module_is_recompiled() {
    let dir = TempDir::new("rewrite");
    let path = dir.path().join("m.wat");
    std::fs::copy(wat("hello.wat"), &path).unwrap();
    assert_eq!(run(&inv(&path, &[])).stdout, "hello from wat\n");
    std::fs::copy(wat("exit7.wat"), &path).unwrap();
    let r = run(&inv(&path, &[]));
    assert_eq!(r.outcome.exit_code, Some(7), "{:?}", r.outcome);
}

#[test]
fn memory_limits_beyond_a_pool_slot_use_the_on_demand_engine() {
    let mut i = inv(&rust("hello"), &[]);
    i.limits.memory_bytes = 8 << 30;
    assert!(!backend().engine_kind(&i).pooled);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from rust\n");
}

#[test]
fn without_pooling_everything_still_runs() {
    let b = WasmBackend::with_config(WasmConfig {
        pool_instances: 0,
        ..WasmConfig::default()
    })
    .unwrap();
    let i = inv(&rust("hello"), &[]);
    assert!(!b.engine_kind(&i).pooled);
    let (io, out, _) = RunIo::captured(Input::Empty);
    let o = b.run_with_io(&i, &io).unwrap();
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out.text(), "hello from rust\n");
}

#[test]
fn prepared_modules_run_many_times() {
    let i = inv(&rust("exitcode"), &["5"]);
    let m = backend()
        .prepare(
            &WasmBackend::module_path(&i).unwrap(),
            backend().engine_kind(&i),
        )
        .unwrap();
    for _ in 0..20 {
        let o = backend()
            .run_prepared(&m, &i, &RunIo::captured(Input::Empty).0)
            .unwrap();
        assert_eq!(o.exit_code, Some(5));
    }
    // Prepared for the unmetered engine, run with fuel: refused.
    let mut metered = i.clone();
    metered.fuel = Some(1000);
    assert!(backend()
        .run_prepared(&m, &metered, &RunIo::default())
        .is_err());
}

#[test]
fn deterministic_runs_are_identical() {
    let mut i = inv(&rust("clockrand"), &[]);
    // Clocks and randomness need their grants, in deterministic mode too.
    i.capabilities = vec![Capability::ClockRead, Capability::RandomRead];
    i.deterministic = true;
    let a = run(&i);
    let b = run(&i);
    assert_eq!(a.outcome.status, Status::Exited, "{:?}", a.outcome);
    assert_eq!(a.stdout, b.stdout);
    assert!(
        a.stdout.contains(&format!(
            "wall_ns={}",
            warden_wasm::FIXED_WALL_CLOCK.as_nanos()
        )),
        "{}",
        a.stdout
    );
    // Without --deterministic, randomness differs between runs.
    i.deterministic = false;
    let c = run(&i);
    let d = run(&i);
    let hash = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("hash="))
            .unwrap()
            .to_string()
    };
    assert_ne!(hash(&c.stdout), hash(&d.stdout));
}

#[test]
fn the_backend_trait_names_it_wasm() {
    assert_eq!(backend().name(), "wasm");
}

#[test]
fn nothing_of_a_run_survives_into_the_next() {
    // Same module, same engine, pool slots reused: memory is reset.
    let i = inv(&wat("residue.wat"), &[]);
    for n in 0..20 {
        let r = run(&i);
        assert_eq!(r.outcome.status, Status::Exited, "run {n}: {:?}", r.outcome);
        assert_eq!(
            r.outcome.exit_code,
            Some(0),
            "run {n} saw a previous run's data"
        );
    }
}
