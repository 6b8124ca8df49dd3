//! `warden run` with the wasm backend's on-disk compile cache, and
//! `warden compile` / `warden run x.cwasm` with authentication: the real
//! binary, a cache directory of its own per test (`WARDEN_CACHE_DIR`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn warden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden"))
}

fn hello_wat() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-guests/wat/hello.wat")
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let dir =
            std::env::temp_dir().join(format!("warden-cli-wasm-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Tmp(dir.canonicalize().unwrap())
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn warden(cache: &Path, args: &[&str]) -> Output {
    Command::new(warden_bin())
        .args(args)
        .env("WARDEN_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .output()
        .expect("run warden")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_second_run_reuses_the_compiled_module() {
    let tmp = Tmp::new("reuse");
    let cache = tmp.0.join("cache");
    let module = hello_wat();
    let module = module.to_str().unwrap();
    let first = warden(&cache, &["run", module]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(String::from_utf8_lossy(&first.stdout), "hello from wat\n");
    let made = entries(&cache);
    assert_eq!(made.len(), 1, "one entry after the first run");
    let inode = fs::metadata(&made[0]).unwrap().ino();

    let second = warden(&cache, &["run", module]);
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(String::from_utf8_lossy(&second.stdout), "hello from wat\n");
    // Loaded, not recompiled (a compile would rename a new file into place).
    assert_eq!(entries(&cache), made);
    assert_eq!(fs::metadata(&made[0]).unwrap().ino(), inode);
}

#[test]
fn compile_then_run_and_tampering_is_refused() {
    let tmp = Tmp::new("compile");
    let cache = tmp.0.join("cache");
    let cwasm = tmp.0.join("hello.cwasm");
    let cwasm_s = cwasm.to_str().unwrap();
    let out = warden(
        &cache,
        &["compile", hello_wat().to_str().unwrap(), "-o", cwasm_s],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fs::metadata(&cwasm).unwrap().mode() & 0o777, 0o644);
    let run = warden(&cache, &["run", cwasm_s]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello from wat\n");

    let mut bytes = fs::read(&cwasm).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&cwasm, &bytes).unwrap();
    let run = warden(&cache, &["run", cwasm_s]);
    assert_eq!(run.status.code(), Some(126), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr,
        format!(
            "warden: error: {cwasm_s}: invalid module: not produced by this host's `warden compile` (authentication failed)\n"
        )
    );

    // Another host (another cache directory, another key) refuses it too.
    bytes[middle] ^= 0x01;
    fs::write(&cwasm, &bytes).unwrap();
    let elsewhere = warden(&tmp.0.join("other-cache"), &["run", cwasm_s]);
    assert_eq!(elsewhere.status.code(), Some(126), "{elsewhere:?}");
}

#[test]
fn an_unsafe_cache_directory_is_skipped_for_runs_and_refused_for_compile() {
    let tmp = Tmp::new("unsafe");
    let cache = tmp.0.join("cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let module = hello_wat();
    let run = warden(&cache, &["run", module.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0, "nothing written");

    let cwasm = tmp.0.join("x.cwasm");
    let out = warden(
        &cache,
        &[
            "compile",
            module.to_str().unwrap(),
            "-o",
            cwasm.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot authenticate precompiled modules")
            && stderr.contains("writable by group or others"),
        "{stderr}"
    );
    assert!(!cwasm.exists());
}
