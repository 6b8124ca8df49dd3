//! `warden` runs jails itself and hands WebAssembly to `warden-wasm`, the
//! binary beside it. These tests run copies of `warden` alone in a
//! directory to see that the hand-over fails cleanly and that nothing else
//! needs the other binary.

use std::path::PathBuf;
use std::process::Command;

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("warden-split-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd`, retrying while its binary is still open for writing
/// somewhere (ETXTBSY; see `lonely_warden`).
fn output(cmd: &mut Command) -> std::process::Output {
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("{cmd:?}: binary stayed busy")
}

/// A copy of `warden` alone in a directory, and a hello module beside it.
fn lonely_warden(name: &str) -> (Dir, PathBuf, PathBuf) {
    let dir = Dir::new(name);
    let warden = dir.0.join("warden");
    // A hard link, not a copy: a copy's write descriptor, inherited by a
    // child another test thread forks meanwhile, makes exec fail with
    // ETXTBSY. (A copy, with retries, where the two are on different
    // filesystems.)
    if std::fs::hard_link(env!("CARGO_BIN_EXE_warden"), &warden).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_warden"), &warden).unwrap();
    }
    let module = dir.0.join("hello.wat");
    std::fs::write(&module, HELLO_WAT).unwrap();
    (dir, warden, module)
}

#[test]
fn warden_hands_webassembly_to_warden_wasm() {
    let dir = Dir::new("handover");
    let module = dir.0.join("hello.wat");
    std::fs::write(&module, HELLO_WAT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", "--report", "-"])
        .arg(&module)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let report: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(report["backend"], "wasm", "{report}");
}

#[test]
fn a_missing_warden_wasm_is_a_clear_warden_error() {
    let (_dir, warden, module) = lonely_warden("missing");
    for args in [
        vec!["run".to_string(), module.display().to_string()],
        vec![
            "compile".to_string(),
            module.display().to_string(),
            "-o".to_string(),
            "/dev/null".to_string(),
        ],
    ] {
        let out = output(Command::new(&warden).args(&args));
        assert_eq!(out.status.code(), Some(125), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("warden-wasm") && stderr.contains("WebAssembly"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn jail_runs_and_policy_checks_need_only_warden() {
    let (dir, warden, _module) = lonely_warden("alone");
    let out = output(Command::new(&warden).args(["run", "--", "/bin/echo", "jailed"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "jailed\n");
    let policy = dir.0.join("p.yaml");
    std::fs::write(&policy, "grants:\n  - env:LANG\n").unwrap();
    let out = output(Command::new(&warden).args(["policy", "check"]).arg(&policy));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
