//! The WIT ABI (`warden:host@0.1.0`) for components: the same host logic
//! as the preview-1 module, the same refusal of ungranted interfaces
//! before the component starts.
use crate::common::*;
use warden_core::{LogLevel, ModuleRef, Status};

#[test]
fn a_component_uses_log_kv_and_call() {
    let dir = TempDir::new("wit-kv");
    let backend = warden_wasm::WasmBackend::with_config(warden_wasm::WasmConfig {
        kv_dir: Some(dir.path().to_path_buf()),
        ..warden_wasm::WasmConfig::default()
    })
    .unwrap();
    let mut i = inv(
        &component("hostwit"),
        &[
            "log warn a warning",
            "set orders k1 v1",
            "get orders k1",
            "list orders k",
            "get users k1",
            "call echoer echo hi",
            "http http://example.com/",
        ],
    );
    i.capabilities = caps(&[
        "log:write",
        "kv:write:orders",
        "module:call:echoer",
        "net:http:127.0.0.1",
    ]);
    i.modules = vec![ModuleRef {
        name: "echoer".into(),
        path: rust("hostcall"),
        grants: None,
    }];
    let (io, out, err) = warden_wasm::RunIo::captured(warden_wasm::Input::Empty);
    let o = backend.run_with_io(&i, &io).unwrap();
    let stdout = out.text();
    assert_eq!(o.exit_code, Some(0), "{o:?} {stdout} {}", err.text());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "log warn a warning: Ok(())");
    assert_eq!(lines[1], "set orders k1 v1: Ok(())");
    assert_eq!(lines[2], "get orders k1: Ok(v1)");
    assert_eq!(lines[3], "list orders k: Ok(k1 more=false)");
    assert!(lines[4].contains("\"denied\""), "{}", lines[4]);
    assert_eq!(lines[5], "call echoer echo hi: Ok(0 hi)");
    assert!(lines[6].contains("\"denied\""), "{}", lines[6]);
    assert_eq!(o.logs.len(), 1);
    assert_eq!(o.logs[0].level, LogLevel::Warn);
    assert_eq!(o.logs[0].message, "a warning");
    // Refused calls are violations, as for preview-1 modules.
    assert_eq!(o.status, Status::Violation);
    assert_eq!(
        violations_of(&o, "capability"),
        [
            "warden:host/http.send: net:http:example.com not granted",
            "warden:host/kv.get: kv:read:users not granted",
        ]
    );
}

#[test]
fn a_component_importing_an_ungranted_interface_is_refused() {
    let mut i = inv(&component("hostwit"), &["log info x"]);
    // Everything but net:http: the http interface is not linked for it.
    i.capabilities = caps(&["log:write", "kv:read:x", "module:call:x"]);
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Error, "{:?}", r.outcome);
    assert_eq!(r.outcome.exit_code, Some(126));
    let error = r.outcome.error.unwrap_or_default();
    assert!(error.contains("warden:host/http@0.1.0"), "{error}");
    assert!(error.contains("net:http:HOST"), "{error}");
    assert_eq!(r.stdout, "");
}
