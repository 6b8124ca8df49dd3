//! WASI 0.2 command components (Rust guests built for wasm32-wasip2):
//! the same grants and limits as preview-1 modules.
use std::time::Duration;

use crate::common::*;
use warden_core::Status;

#[test]
fn a_component_prints_and_exits_zero() {
    let r = run(&inv(&component("hello"), &[]));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(0));
    assert_eq!(r.stdout, "hello from rust\n");
    assert_eq!(r.outcome.stdout_bytes, 16);
    assert!(r.outcome.peak_memory_bytes > 0);
    let m = backend()
        .prepare(
            &component("hello"),
            backend().engine_kind(&inv(&component("hello"), &[])),
        )
        .unwrap();
    assert!(m.is_component());
}

#[test]
fn component_exit_codes_propagate() {
    // Rust's std on wasm32-wasip2 exits through `wasi:cli/exit.exit`,
    // which carries success or failure only: every non-zero status is 1.
    // (`exit-with-code`, which carries the status, is linked too.)
    for (code, expected) in [(0, 0), (1, 1), (3, 1), (42, 1)] {
        let r = run(&inv(&component("exitcode"), &[&code.to_string()]));
        assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
        assert_eq!(r.outcome.exit_code, Some(expected), "{:?}", r.outcome);
    }
}

#[test]
fn component_args_env_and_stdin() {
    let module = component("env");
    let mut i = inv(&module, &["x"]);
    i.env = vec![("K".into(), "v".into())];
    let r = run(&i);
    assert_eq!(r.stdout, format!("arg:{}\narg:x\nK=v\n", module.display()));
    let r = run_with(
        &inv(&component("cat"), &[]),
        warden_wasm::Input::Bytes(b"piped".to_vec()),
    );
    assert_eq!(r.stdout, "piped");
}

#[test]
fn component_grants_are_preopens() {
    let dir = TempDir::new("cgrant");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "inside").unwrap();
    std::fs::write(dir.path().join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink("../secret", data.join("link")).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    let mut i = inv(&component("readfile"), &[&path(&data.join("f"))]);
    i.capabilities = vec![read(&data)];
    assert_eq!(run(&i).stdout, "inside");
    for escape in [dir.path().join("secret"), data.join("link")] {
        let mut i = inv(&component("readfile"), &[&path(&escape)]);
        i.capabilities = vec![read(&data)];
        let r = run(&i);
        assert_eq!(
            r.outcome.exit_code,
            Some(1),
            "{}: {}",
            escape.display(),
            r.stdout
        );
        assert!(r.stderr.contains("readfile"), "{}", r.stderr);
        assert_eq!(r.stdout, "");
    }
    let mut i = inv(&component("writefile"), &[&path(&data.join("new")), "x"]);
    i.capabilities = vec![read(&data)];
    assert_eq!(run(&i).outcome.exit_code, Some(1));
    assert!(!data.join("new").exists());
    i.capabilities = vec![write(&data)];
    assert_eq!(run(&i).outcome.exit_code, Some(0));
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "x");
}

#[test]
fn component_limits() {
    let mut i = inv(&component("alloc"), &[]);
    i.limits.memory_bytes = 32 << 20;
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::MemoryLimit, "{:?}", r.outcome);

    let mut i = inv(&component("fib"), &["40"]);
    i.fuel = Some(10_000_000);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::CpuLimit, "{:?}", r.outcome);

    let mut i = inv(&component("fib"), &["45"]);
    i.limits.wall_time = Duration::from_millis(100);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Timeout, "{:?}", r.outcome);
}

#[test]
fn precompiled_components_run() {
    let dir = TempDir::new("ccwasm");
    let bytes = std::fs::read(component("hello")).unwrap();
    let path = dir.path().join("hello.cwasm");
    std::fs::write(&path, backend().precompile(&bytes, false).unwrap()).unwrap();
    let r = run(&inv(&path, &[]));
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert_eq!(r.stdout, "hello from rust\n");
}
