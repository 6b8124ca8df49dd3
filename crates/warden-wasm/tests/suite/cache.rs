//! The on-disk compile cache, `.cwasm` authentication and compiles under
//! the run's deadline: real files, real engines, a cache directory per
//! test.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use warden_core::Status;
use warden_wasm::{EngineKind, Input, RunIo, WasmBackend, WasmConfig};

const UNMETERED: EngineKind = EngineKind {
    metered: false,
    pooled: true,
};

/// A backend whose disk cache is `dir` (a small pool: tests make many).
fn backend_in(dir: &Path) -> WasmBackend {
    WasmBackend::with_config(WasmConfig {
        cache_dir: Some(dir.to_path_buf()),
        pool_instances: 4,
        ..WasmConfig::default()
    })
    .expect("wasm backend")
}

/// A fresh cache directory (not yet created: the backend makes it).
fn cache_dir(tmp: &TempDir) -> PathBuf {
    tmp.path().join("cache")
}

/// The entry files of a cache directory (64 hex digits each).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs `module` on `b` with default limits; stdout and the outcome.
fn run_on(b: &WasmBackend, module: &Path) -> (warden_core::Outcome, String) {
    let (io, out, _) = RunIo::captured(Input::Empty);
    let o = b.run_with_io(&inv(module, &[]), &io).expect("backend runs");
    (o, out.text())
}

/// A WAT module printing `text` (at most 60 bytes).
fn printer(text: &str) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        escaped = text.replace('\n', "\\n"),
        len = text.len()
    )
}

#[test]
fn a_second_backend_loads_from_disk_instead_of_compiling() {
    let tmp = TempDir::new("cache-hit");
    let dir = cache_dir(&tmp);
    let module = wat("hello.wat");

    let first = backend_in(&dir);
    let m = first.prepare(&module, UNMETERED).unwrap();
    assert!(m.compiled_here() && !m.from_disk_cache());
    assert_eq!(entries(&dir).len(), 1);
    // The same backend keeps it in memory.
    assert!(first.prepare(&module, UNMETERED).unwrap().compiled_here());

    let second = backend_in(&dir);
    let m = second.prepare(&module, UNMETERED).unwrap();
    assert!(m.from_disk_cache(), "{m:?}");
    assert!(!m.compiled_here());
    let (o, out) = run_on(&second, &module);
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out, "hello from wat\n");

    // The directory and key are private to the user.
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(dir.join("key")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(dir.join("key")).unwrap().len(), 32);
    for e in entries(&dir) {
        assert_eq!(fs::metadata(e).unwrap().mode() & 0o777, 0o600);
    }
    // Nothing left behind but the key and the entry.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn entries_are_per_engine_and_per_content() {
    let tmp = TempDir::new("cache-kinds");
    let dir = cache_dir(&tmp);
    let module = wat("hello.wat");
    let b = backend_in(&dir);
    let metered = EngineKind {
        metered: true,
        pooled: true,
    };
    b.prepare(&module, UNMETERED).unwrap();
    b.prepare(&module, metered).unwrap();
    assert_eq!(entries(&dir).len(), 2);

    // Same content under another name: the same entry.
    let copy = tmp.path().join("copy.wat");
    fs::copy(&module, &copy).unwrap();
    let b2 = backend_in(&dir);
    assert!(b2.prepare(&copy, UNMETERED).unwrap().from_disk_cache());
    assert!(b2.prepare(&copy, metered).unwrap().from_disk_cache());
    assert_eq!(entries(&dir).len(), 2);

    // Rewritten with other content: compiled, and runs the new code.
    fs::copy(wat("exit7.wat"), &copy).unwrap();
    let m = b2.prepare(&copy, UNMETERED).unwrap();
    assert!(m.compiled_here());
    let (o, _) = run_on(&b2, &copy);
    assert_eq!(o.exit_code, Some(7), "{o:?}");
    assert_eq!(entries(&dir).len(), 3);
}

#[test]
fn components_are_cached_too() {
    let tmp = TempDir::new("cache-component");
    let dir = cache_dir(&tmp);
    let module = component("hello");
    assert!(backend_in(&dir)
        .prepare(&module, UNMETERED)
        .unwrap()
        .compiled_here());
    let b = backend_in(&dir);
    let m = b.prepare(&module, UNMETERED).unwrap();
    assert!(m.from_disk_cache() && m.is_component(), "{m:?}");
    let (o, out) = run_on(&b, &module);
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out, "hello from rust\n");
}

/// Damages the only entry of `dir` with `damage`, then checks that a new
/// backend recompiles (and runs correctly), rewrites the entry, and that
/// the next one loads it again.
fn assert_recovers(dir: &Path, module: &Path, expected: &str, damage: impl Fn(&Path)) {
    let entry = entries(dir).pop().expect("an entry");
    damage(&entry);
    let b = backend_in(dir);
    let m = b.prepare(module, UNMETERED).unwrap();
    assert!(m.compiled_here(), "a damaged entry must not be loaded");
    let (o, out) = run_on(&b, module);
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out, expected);
    assert!(backend_in(dir)
        .prepare(module, UNMETERED)
        .unwrap()
        .from_disk_cache());
}

#[test]
fn a_corrupted_entry_is_deleted_and_recompiled() {
    let tmp = TempDir::new("cache-corrupt");
    let dir = cache_dir(&tmp);
    let module = wat("hello.wat");
    backend_in(&dir).prepare(&module, UNMETERED).unwrap();
    let expected = "hello from wat\n";
    let len = fs::metadata(entries(&dir)[0].as_path()).unwrap().len() as usize;

    // One flipped bit anywhere: header, digest, artifact (machine code), tag.
    for at in [0, 10, 50, 80, len / 2, len - 40, len - 1] {
        assert_recovers(&dir, &module, expected, |e| {
            let mut bytes = fs::read(e).unwrap();
            bytes[at] ^= 1;
            fs::write(e, bytes).unwrap();
        });
    }
    // Truncated, empty, garbage, appended to.
    assert_recovers(&dir, &module, expected, |e| {
        let bytes = fs::read(e).unwrap();
        fs::write(e, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert_recovers(&dir, &module, expected, |e| fs::write(e, b"").unwrap());
    assert_recovers(&dir, &module, expected, |e| {
        fs::write(e, vec![0x7f; 4096]).unwrap()
    });
    assert_recovers(&dir, &module, expected, |e| {
        let mut bytes = fs::read(e).unwrap();
        bytes.push(0);
        fs::write(e, bytes).unwrap();
    });
    // Not a regular file.
    assert_recovers(&dir, &module, expected, |e| {
        fs::remove_file(e).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", e).unwrap();
    });
    // Another host's key: nothing authenticates.
    assert_recovers(&dir, &module, expected, |_| {
        let key = dir.join("key");
        let mut perms = fs::metadata(&key).unwrap().permissions();
        perms.set_mode(0o600);
        fs::write(&key, [9u8; 32]).unwrap();
        fs::set_permissions(&key, perms).unwrap();
    });
}

#[test]
fn a_valid_entry_under_another_modules_name_is_not_used() {
    // Each entry authenticates, but names the digest of its source: moved
    // to the name of another module's entry, it is refused.
    let tmp = TempDir::new("cache-swap");
    let dir = cache_dir(&tmp);
    let a = tmp.path().join("a.wat");
    let b = tmp.path().join("b.wat");
    fs::write(&a, printer("from a\n")).unwrap();
    fs::write(&b, printer("from b\n")).unwrap();
    let backend = backend_in(&dir);
    backend.prepare(&a, UNMETERED).unwrap();
    let entry_a = entries(&dir)[0].clone();
    backend.prepare(&b, UNMETERED).unwrap();
    let entry_b = entries(&dir)
        .into_iter()
        .find(|e| *e != entry_a)
        .expect("entry of b");
    fs::copy(&entry_a, &entry_b).unwrap();

    let fresh = backend_in(&dir);
    let m = fresh.prepare(&b, UNMETERED).unwrap();
    assert!(m.compiled_here());
    let (_, out) = run_on(&fresh, &b);
    assert_eq!(out, "from b\n");
}

#[test]
fn precompiled_modules_round_trip_and_tampered_ones_are_refused() {
    let tmp = TempDir::new("cwasm");
    let dir = cache_dir(&tmp);
    let b = backend_in(&dir);
    let source = fs::read(wat("hello.wat")).unwrap();
    let cwasm = tmp.path().join("hello.cwasm");
    let sealed = b.precompile(&source, false).unwrap();
    fs::write(&cwasm, &sealed).unwrap();

    // Another backend on the same host key runs it.
    let other = backend_in(&dir);
    let (o, out) = run_on(&other, &cwasm);
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out, "hello from wat\n");
    assert!(!other.prepare(&cwasm, UNMETERED).unwrap().compiled_here());

    // Metered too.
    let metered = tmp.path().join("metered.cwasm");
    fs::write(&metered, b.precompile(&source, true).unwrap()).unwrap();
    let mut i = inv(&metered, &[]);
    i.fuel = Some(1_000_000);
    let (io, out, _) = RunIo::captured(Input::Empty);
    let o = other.run_with_io(&i, &io).unwrap();
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out.text(), "hello from wat\n");

    let refused = |path: &Path, b: &WasmBackend| {
        let (o, _) = run_on(b, path);
        assert_eq!(o.status, Status::Error, "{o:?}");
        assert_eq!(o.exit_code, Some(126));
        assert_eq!(o.exit_status(), 126);
        o.error.unwrap_or_default()
    };
    let authentication = format!(
        "{}: invalid module: not produced by this host's `warden compile` (authentication failed)",
        tmp.path().join("t.cwasm").display()
    );
    let t = tmp.path().join("t.cwasm");
    // Every byte matters: machine code, trailer tag, trailer magic.
    for at in [
        0,
        100,
        sealed.len() / 2,
        sealed.len() - 40,
        sealed.len() - 1,
    ] {
        let mut bytes = sealed.clone();
        bytes[at] ^= 0x10;
        fs::write(&t, &bytes).unwrap();
        assert_eq!(refused(&t, &other), authentication, "byte {at}");
    }
    // The bare wasmtime artifact (what `wasmtime compile` writes).
    fs::write(&t, &sealed[..sealed.len() - 40]).unwrap();
    assert_eq!(refused(&t, &other), authentication);
    // Garbage, and a text module named .cwasm.
    fs::write(&t, b"not a module").unwrap();
    assert_eq!(refused(&t, &other), authentication);
    fs::write(&t, &source).unwrap();
    assert_eq!(refused(&t, &other), authentication);
    // Sealed on another host (another key).
    let elsewhere = TempDir::new("cwasm-elsewhere");
    let foreign = backend_in(&cache_dir(&elsewhere))
        .precompile(&source, false)
        .unwrap();
    fs::write(&t, foreign).unwrap();
    assert_eq!(refused(&t, &other), authentication);
    assert!(
        !authentication.contains('\n'),
        "one line for the command line"
    );
}

#[test]
fn an_unsafe_cache_directory_is_not_used() {
    let tmp = TempDir::new("cache-perms");
    let module = wat("hello.wat");
    let source = fs::read(&module).unwrap();

    let check = |dir: &Path, why: &str| {
        let b = backend_in(dir);
        let err = b.disk_cache().unwrap_err();
        assert!(err.contains(why), "{err}");
        // Runs still work: compiled, never cached.
        let (o, out) = run_on(&b, &module);
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert_eq!(out, "hello from wat\n");
        let again = backend_in(dir);
        assert!(again.prepare(&module, UNMETERED).unwrap().compiled_here());
        // No `.cwasm` can be made or run.
        let e = b.precompile(&source, false).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot authenticate precompiled modules: "),
            "{e}"
        );
        let cwasm = tmp.path().join("x.cwasm");
        fs::write(&cwasm, b"anything").unwrap();
        let (o, _) = run_on(&b, &cwasm);
        assert_eq!(o.exit_code, Some(126));
        assert!(
            o.error
                .as_deref()
                .unwrap_or("")
                .contains("invalid module: cannot be authenticated"),
            "{o:?}"
        );
    };

    // Writable by others.
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    check(&open, "writable by group or others");
    assert!(entries(&open).is_empty());
    assert!(!open.join("key").exists());

    // Writable by the group.
    let group = tmp.path().join("group");
    fs::create_dir(&group).unwrap();
    fs::set_permissions(&group, fs::Permissions::from_mode(0o770)).unwrap();
    check(&group, "writable by group or others");

    // A symbolic link (even to a good directory).
    let good = tmp.path().join("good");
    backend_in(&good).prepare(&module, UNMETERED).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    check(&link, "not a directory (or a symbolic link)");

    // A key others can read.
    let leaky = tmp.path().join("leaky");
    backend_in(&leaky).prepare(&module, UNMETERED).unwrap();
    fs::set_permissions(leaky.join("key"), fs::Permissions::from_mode(0o644)).unwrap();
    check(&leaky, "accessible to group or others");

    // Owned by someone else (these tests run as root, which can chown).
    if rustix::process::geteuid().is_root() {
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        check(&theirs, "owned by uid 65534");
    }
}

#[test]
fn no_cache_directory_means_no_disk_cache_and_no_cwasm() {
    let b = WasmBackend::with_config(WasmConfig {
        cache_dir: None,
        pool_instances: 4,
        ..WasmConfig::default()
    })
    .unwrap();
    assert!(b.disk_cache().is_err());
    let (o, out) = run_on(&b, &wat("hello.wat"));
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(out, "hello from wat\n");
    assert!(b.precompile(b"(module)", false).is_err());
}

#[test]
fn the_cache_is_bounded() {
    let tmp = TempDir::new("cache-evict");
    let dir = cache_dir(&tmp);
    // Room for about three entries of these tiny modules.
    let probe = backend_in(&dir);
    let first = tmp.path().join("m0.wat");
    fs::write(&first, printer("module 0\n")).unwrap();
    probe.prepare(&first, UNMETERED).unwrap();
    let size = fs::metadata(&entries(&dir)[0]).unwrap().len();
    let b = WasmBackend::with_config(WasmConfig {
        cache_dir: Some(dir.clone()),
        cache_max_bytes: size * 3 + size / 2,
        pool_instances: 4,
        ..WasmConfig::default()
    })
    .unwrap();
    let mut modules = vec![first];
    for n in 1..8 {
        std::thread::sleep(Duration::from_millis(20));
        let m = tmp.path().join(format!("m{n}.wat"));
        fs::write(&m, printer(&format!("module {n}\n"))).unwrap();
        b.prepare(&m, UNMETERED).unwrap();
        modules.push(m);
        let total: u64 = entries(&dir)
            .iter()
            .map(|e| fs::metadata(e).unwrap().len())
            .sum();
        assert!(total <= size * 3 + size / 2, "{total} bytes after {n}");
    }
    // The newest survive, the oldest went.
    let fresh = backend_in(&dir);
    assert!(fresh
        .prepare(&modules[7], UNMETERED)
        .unwrap()
        .from_disk_cache());
    assert!(fresh
        .prepare(&modules[0], UNMETERED)
        .unwrap()
        .compiled_here());
}

#[test]
fn stale_temporary_files_are_removed() {
    let tmp = TempDir::new("cache-tmp");
    let dir = cache_dir(&tmp);
    let b = backend_in(&dir);
    b.prepare(&wat("hello.wat"), UNMETERED).unwrap();
    let stale = dir.join("tmp.0123456789abcdef");
    let fresh = dir.join("tmp.fedcba9876543210");
    fs::write(&stale, b"half an entry").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    let old = fs::File::options().write(true).open(&stale).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    drop(old);
    // Any write evicts.
    b.prepare(&wat("exit7.wat"), UNMETERED).unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists());
}

/// A module that keeps Cranelift busy for a long time: many functions,
/// each a long chain of arithmetic on many locals.
fn slow_module(functions: usize, ops: usize) -> String {
    let mut wat = String::from("(module\n");
    for _ in 0..functions {
        wat.push_str("  (func (param i64) (result i64) (local i64 i64 i64 i64 i64 i64 i64)\n");
        for i in 0..ops {
            let a = i % 8;
            let b = (i * 5 + 3) % 8;
            wat.push_str(&format!(
                "    (local.set {a} (i64.add (local.get {a}) (i64.mul (local.get {b}) (i64.const {i}))))\n"
            ));
        }
        wat.push_str("    (local.get 3))\n");
    }
    wat.push_str("  (memory (export \"memory\") 1)\n  (func (export \"_start\")))\n");
    wat
}

#[test]
fn a_compile_past_the_wall_clock_deadline_is_a_timeout() {
    let tmp = TempDir::new("compile-timeout");
    let dir = cache_dir(&tmp);
    let module = tmp.path().join("slow.wat");
    fs::write(&module, slow_module(60, 400)).unwrap();
    let b = backend_in(&dir);
    let mut i = inv(&module, &[]);
    i.limits.wall_time = Duration::from_millis(100);
    let started = Instant::now();
    let (io, _, _) = RunIo::captured(Input::Empty);
    let o = b.run_with_io(&i, &io).unwrap();
    let took = started.elapsed();
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    assert_eq!(o.exit_status(), 124);
    let error = o.error.unwrap_or_default();
    assert!(
        error.contains("compiling the module did not finish before the wall-clock deadline"),
        "{error}"
    );

    // The compile went on in the background: a caller without a deadline
    // joins it (no second compile) and it lands in the disk cache.
    let joined = Instant::now();
    let m = b.prepare(&module, UNMETERED).unwrap();
    let compile = took + joined.elapsed();
    assert!(m.compiled_here());
    // The run returned long before the compile ended (whatever the speed
    // of this build: reading and hashing the file is all it waited for).
    assert!(took < compile / 3, "took {took:?} of a {compile:?} compile");
    assert!(backend_in(&dir)
        .prepare(&module, UNMETERED)
        .unwrap()
        .from_disk_cache());
}

#[test]
fn a_module_rewritten_within_one_timestamp_tick_is_reloaded() {
    // Same size, same inode and, on a filesystem with coarse timestamps,
    // the same mtime and ctime as the version read a moment before: only
    // the content digest tells the versions apart. (Both versions are in
    // the disk cache, so that a read and a rewrite fit in one tick.)
    let tmp = TempDir::new("racy");
    let dir = cache_dir(&tmp);
    let b = backend_in(&dir);
    let (a_text, b_text) = (printer("version a\n"), printer("version b\n"));
    let path = tmp.path().join("m.wat");
    for text in [&a_text, &b_text] {
        fs::write(&path, text).unwrap();
        backend_in(&dir).prepare(&path, UNMETERED).unwrap();
    }
    for _ in 0..30 {
        fs::write(&path, &a_text).unwrap();
        b.prepare(&path, UNMETERED).unwrap();
        fs::write(&path, &b_text).unwrap();
        let (o, out) = run_on(&b, &path);
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert_eq!(out, "version b\n");
    }
}

#[test]
fn the_module_size_is_bounded_by_format() {
    let tmp = TempDir::new("too-big");
    let b = backend_in(&cache_dir(&tmp));
    let big = tmp.path().join("big.wasm");
    let f = fs::File::create(&big).unwrap();
    f.set_len(warden_wasm::MAX_MODULE_BYTES + 1).unwrap();
    let (o, _) = run_on(&b, &big);
    assert_eq!(o.exit_code, Some(126), "{o:?}");
    assert!(
        o.error.as_deref().unwrap_or("").contains("larger than the"),
        "{o:?}"
    );
}

#[test]
fn the_wall_clock_limit_covers_the_compile_too() {
    // A slow-compiling module whose `_start` spins: on a cache miss the
    // compile and the guest share one --wall-time budget, as a jail's
    // set-up and program do.
    let tmp = TempDir::new("compile-budget");
    let module = tmp.path().join("slow_spin.wat");
    let wat = slow_module(30, 400).replace(
        "(func (export \"_start\")))",
        "(func (export \"_start\") (loop (br 0))))",
    );
    fs::write(&module, wat).unwrap();
    // How long this build takes to compile it, warm (backends with caches
    // of their own, so that the run below compiles again).
    let mut compile = Duration::ZERO;
    for _ in 0..2 {
        let probe = TempDir::new("compile-budget-probe");
        let probe_backend = backend_in(&cache_dir(&probe));
        let t = Instant::now();
        probe_backend.prepare(&module, UNMETERED).unwrap();
        compile = t.elapsed();
    }
    let b = backend_in(&cache_dir(&tmp));
    let mut i = inv(&module, &[]);
    i.limits.wall_time = compile.mul_f64(1.25);
    let started = Instant::now();
    let (io, _, _) = RunIo::captured(Input::Empty);
    let o = b.run_with_io(&i, &io).unwrap();
    let took = started.elapsed();
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    // Counted from the guest's start instead, it would take the compile
    // longer (≈ 2.25× the compile in all).
    assert!(
        took < i.limits.wall_time + compile / 5,
        "took {took:?} with a {:?} limit (compile alone {compile:?})",
        i.limits.wall_time
    );
}
