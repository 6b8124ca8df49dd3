//! `file_size` and `open_files` on the guest's own files (preview-1
//! modules): a write past the file-size limit fails with EFBIG and writes
//! nothing, an open past the descriptor limit fails with EMFILE; both are
//! recorded as `limit` violations.
use crate::common::*;
use warden_core::Status;

/// Preview-1 errno values.
const EFBIG: i32 = 22;
const EMFILE: i32 = 33;

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn a_write_past_the_file_size_limit_is_refused() {
    let dir = TempDir::new("fsize");
    let target = dir.path().join("out.txt");
    let mut i = inv(&rust("writefile"), &[&p(&target), "0123456789"]);
    i.capabilities = vec![write(dir.path())];
    i.limits.file_size_bytes = 4;
    let r = run(&i);
    // writefile exits 2 when its write fails.
    assert_eq!(r.outcome.exit_code, Some(2), "{:?} {}", r.outcome, r.stderr);
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    assert!(r.stderr.contains("too large"), "{}", r.stderr);
    let refused = violations_of(&r.outcome, "limit");
    assert_eq!(refused.len(), 1, "{:?}", r.outcome.violations);
    assert!(
        refused[0].contains("file_size limit of 4 bytes"),
        "{refused:?}"
    );
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    assert_eq!(r.outcome.enforcement["file_size"], "wasm_write_check");

    // Up to the limit is fine.
    i.limits.file_size_bytes = 10;
    let r = run(&i);
    r.expect_exited();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "0123456789");
    assert!(r.outcome.violations.is_empty(), "{:?}", r.outcome);
}

/// Opens `a.txt` in the first preopen with O_CREAT and the given fdflags,
/// writes 8 bytes `times` times (fd_write, or fd_pwrite at offset 0 when
/// `pwrite`), then truncates the file to 100 bytes; exits with
/// 1000 × (successful writes) + errno of the first failed write, or with
/// 900 + errno if only the truncation failed.
fn writer_wat(fdflags: u32, times: u32, pwrite: bool) -> String {
    let call = if pwrite {
        "(call $fd_pwrite (local.get $fd) (i32.const 16) (i32.const 1) (i64.const 0) (i32.const 24))"
    } else {
        "(call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))"
    };
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite"
    (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size"
    (func $set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "a.txt")
  (data (i32.const 64) "12345678")
  (func (export "_start")
    (local $fd i32) (local $e i32) (local $n i32)
    ;; path_open(3, 0, "a.txt", O_CREAT, all rights, fdflags) -> fd at 8
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 5)
      (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const {fdflags}) (i32.const 8)))
    (if (local.get $e) (then (call $exit (i32.add (i32.const 800) (local.get $e)))))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 64))
    (i32.store (i32.const 20) (i32.const 8))
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $n) (i32.const {times})))
        (local.set $e {call})
        (if (local.get $e)
          (then (call $exit (i32.add (i32.mul (local.get $n) (i32.const 1000)) (local.get $e)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $more)))
    (local.set $e (call $set_size (local.get $fd) (i64.const 100)))
    (if (local.get $e) (then (call $exit (i32.add (i32.const 900) (local.get $e)))))
    (call $exit (i32.mul (local.get $n) (i32.const 1000)))))"#
    )
}

fn run_writer(fdflags: u32, times: u32, pwrite: bool, limit: u64) -> (warden_core::Outcome, u64) {
    let dir = TempDir::new("fwat");
    let module = dir.path().join("writer.wat");
    std::fs::write(&module, writer_wat(fdflags, times, pwrite)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut i = inv(&module, &[]);
    i.capabilities = vec![write(&data)];
    i.limits.file_size_bytes = limit;
    let r = run(&i);
    let size = std::fs::metadata(data.join("a.txt")).map_or(0, |m| m.len());
    (r.outcome, size)
}

#[test]
fn appends_and_positional_writes_are_checked_where_they_end() {
    const APPEND: u32 = 1;
    // Append mode: 8 + 8 fit in 20, the third write would end at 24.
    let (o, size) = run_writer(APPEND, 3, false, 20);
    assert_eq!(o.exit_code, Some(2000 + EFBIG), "{o:?}");
    assert_eq!(size, 16);
    assert_eq!(o.status, Status::Violation, "{o:?}");
    // Sequential writes: the position moves on; the same.
    let (o, size) = run_writer(0, 3, false, 20);
    assert_eq!(o.exit_code, Some(2000 + EFBIG), "{o:?}");
    assert_eq!(size, 16);
    // pwrite at offset 0 never ends past 8: three writes, then growing the
    // file to 100 bytes is refused.
    let (o, size) = run_writer(0, 3, true, 20);
    assert_eq!(o.exit_code, Some(900 + EFBIG), "{o:?}");
    assert_eq!(size, 8);
    let refused = violations_of(&o, "limit");
    assert!(refused[0].contains("fd_filestat_set_size"), "{refused:?}");
    // Within the limit, nothing is refused.
    let (o, size) = run_writer(APPEND, 3, false, 1000);
    assert_eq!(o.exit_code, Some(3000), "{o:?}");
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(size, 100);
}

/// Opens the first preopen itself (".") until that fails, closes the last
/// descriptor and opens once more; exits with 1000 × (opens that worked
/// first) + errno of the failure, plus 100000 if the open after the close
/// failed.
const OPENER: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) ".")
  (func $open (result i32)
    ;; rights: path_open | fd_readdir (a read-only preopen refuses more)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
      (i32.const 2) (i64.const 0x6000) (i64.const 0x6000) (i32.const 0) (i32.const 8)))
  (func (export "_start")
    (local $n i32) (local $e i32) (local $last i32)
    (block $full
      (loop $more
        (local.set $e (call $open))
        (br_if $full (local.get $e))
        (local.set $last (i32.load (i32.const 8)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $more (i32.lt_u (local.get $n) (i32.const 100)))))
    (drop (call $fd_close (local.get $last)))
    (if (call $open)
      (then (local.set $e (i32.add (local.get $e) (i32.const 100000)))))
    (call $exit (i32.add (i32.mul (local.get $n) (i32.const 1000)) (local.get $e)))))"#;

#[test]
fn opens_past_the_descriptor_limit_are_refused() {
    let dir = TempDir::new("nofile");
    let module = dir.path().join("opener.wat");
    std::fs::write(&module, OPENER).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut i = inv(&module, &[]);
    i.capabilities = vec![read(&data)];
    // stdin, stdout, stderr and the preopen: 4 held; 3 more allowed.
    i.limits.open_files = 7;
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(3000 + EMFILE), "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Violation, "{:?}", r.outcome);
    let refused = violations_of(&r.outcome, "limit");
    assert!(
        refused[0].contains("open_files limit of 7 descriptors"),
        "{refused:?}"
    );
    assert_eq!(r.outcome.enforcement["open_files"], "wasm_fd_count");

    // The default (256) is far away.
    i.limits.open_files = 256;
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(100_000), "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
}

#[test]
fn components_report_the_file_limits_as_not_enforced() {
    let dir = TempDir::new("comp");
    let target = dir.path().join("c.txt");
    let mut i = inv(&component("writefile"), &[&p(&target), "x"]);
    i.capabilities = vec![write(dir.path())];
    let r = run(&i);
    r.expect_exited();
    assert_eq!(r.outcome.enforcement["file_size"], "not_enforced");
    assert_eq!(r.outcome.enforcement["open_files"], "not_enforced");
    assert!(r
        .outcome
        .warnings
        .iter()
        .any(|w| w.contains("file_size: not enforced")));
}
