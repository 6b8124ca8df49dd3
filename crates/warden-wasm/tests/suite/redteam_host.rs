//! Red-team tests of the host capabilities (docs/host.md): hostile guests
//! that attack the `warden` preview-1 import module and the gated WASI
//! functions with bad pointers, huge lengths, odd names, floods and
//! confused URLs. Every attack must end in a status code (or a refused
//! module), never a trap of Warden, a panic, an allocation the guest
//! chose, or a capability the run was not granted.
//!
//! The guests are WAT written by the tests (see [`Guest`]): each records
//! the status codes it got (`(call $r EXPR)`) and prints them, in decimal,
//! separated by spaces, on stdout at the end.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::common::net::{self, in_net, PUBLIC};
use crate::common::*;
use warden_core::{Invocation, Status};
use warden_wasm::{Input, RunIo, WasmBackend, WasmConfig};

// Status codes of the preview-1 ABI.
const OK: i64 = 0;
const DENIED: i64 = 1;
const NOT_FOUND: i64 = 2;
const INVALID: i64 = 3;
const TOO_LARGE: i64 = 4;
const FAILED: i64 = 8;
/// WASI's `errno` NOTCAPABLE.
const NOTCAPABLE: i64 = 76;

/// The signature of each import a guest may ask for.
fn import(name: &str) -> String {
    let (module, params) = match name {
        "log" => ("warden", 3),
        "kv_get" => ("warden", 7),
        "kv_set" => ("warden", 6),
        "kv_delete" => ("warden", 4),
        "kv_list" => ("warden", 9),
        "http_request" => ("warden", 12),
        "call" => ("warden", 8),
        "poll_oneoff" | "clock_time_get" | "random_get" => ("wasi_snapshot_preview1", 0),
        other => panic!("unknown import {other}"),
    };
    match name {
        "poll_oneoff" => "(import \"wasi_snapshot_preview1\" \"poll_oneoff\" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))".into(),
        "clock_time_get" => "(import \"wasi_snapshot_preview1\" \"clock_time_get\" (func $clock_time_get (param i32 i64 i32) (result i32)))".into(),
        "random_get" => "(import \"wasi_snapshot_preview1\" \"random_get\" (func $random_get (param i32 i32) (result i32)))".into(),
        _ => format!(
            "(import \"{module}\" \"{name}\" (func ${name} (param{}) (result i32)))",
            " i32".repeat(params)
        ),
    }
}

/// Bytes as a WAT string literal.
fn lit(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.push_str(&format!("\\{b:02x}"));
    }
    s.push('"');
    s
}

/// A WAT guest: imports, data at fixed offsets, a body. Results go to
/// 60000.. (page 0) and are printed at the end.
struct Guest {
    imports: Vec<&'static str>,
    data: Vec<(u32, Vec<u8>)>,
    body: String,
    /// The exported memory: `(memory (export "memory") …)` unless
    /// replaced (e.g. shared).
    memory: String,
    /// More functions (e.g. with locals), callable from the body.
    funcs: String,
}

impl Guest {
    fn new(imports: &[&'static str], body: &str) -> Guest {
        Guest {
            imports: imports.to_vec(),
            data: Vec::new(),
            body: body.to_string(),
            memory: "(memory (export \"memory\") 2)".into(),
            funcs: String::new(),
        }
    }

    fn func(mut self, text: &str) -> Guest {
        self.funcs.push_str(text);
        self.funcs.push('\n');
        self
    }

    fn data(mut self, at: u32, bytes: impl AsRef<[u8]>) -> Guest {
        self.data.push((at, bytes.as_ref().to_vec()));
        self
    }

    fn memory(mut self, decl: &str) -> Guest {
        self.memory = decl.to_string();
        self
    }

    fn text(&self) -> String {
        let imports: Vec<String> = self.imports.iter().map(|i| import(i)).collect();
        let data: Vec<String> = self
            .data
            .iter()
            .map(|(at, bytes)| format!("(data (i32.const {at}) {})", lit(bytes)))
            .collect();
        format!(
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  {imports}
  {memory}
  (global $n (mut i32) (i32.const 0))
  (func $put (param i32)
    (i32.store8 (i32.add (i32.const 60000) (global.get $n)) (local.get 0))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  ;; Records an unsigned decimal and a space.
  (func $r (param $v i32)
    (local $div i32) (local $started i32) (local $digit i32)
    (local.set $div (i32.const 1000000000))
    (block $done
      (loop $l
        (local.set $digit (i32.div_u (local.get $v) (local.get $div)))
        (local.set $v (i32.rem_u (local.get $v) (local.get $div)))
        (if (i32.or (i32.or (local.get $started) (local.get $digit))
                    (i32.eq (local.get $div) (i32.const 1)))
          (then
            (local.set $started (i32.const 1))
            (call $put (i32.add (i32.const 48) (local.get $digit)))))
        (br_if $done (i32.eq (local.get $div) (i32.const 1)))
        (local.set $div (i32.div_u (local.get $div) (i32.const 10)))
        (br $l)))
    (call $put (i32.const 32)))
  {funcs}
  (func (export "_start")
    {body}
    (i32.store (i32.const 0) (i32.const 60000))
    (i32.store (i32.const 4) (global.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  {data}
)"#,
            imports = imports.join("\n  "),
            memory = self.memory,
            body = self.body,
            funcs = self.funcs,
            data = data.join("\n  "),
        )
    }

    /// Writes the guest to a file of its own and returns its path.
    fn file(&self) -> PathBuf {
        static DIR: OnceLock<TempDir> = OnceLock::new();
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = DIR.get_or_init(|| TempDir::new("redteam"));
        let path = dir
            .path()
            .join(format!("g{}.wat", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, self.text()).expect("write guest");
        path
    }
}

/// A backend whose key-value stores live in a fresh directory.
fn kv_backend() -> &'static (WasmBackend, TempDir) {
    static B: OnceLock<(WasmBackend, TempDir)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = TempDir::new("redteam-kv");
        let config = WasmConfig {
            kv_dir: Some(dir.path().join("stores")),
            ..WasmConfig::default()
        };
        (WasmBackend::with_config(config).expect("backend"), dir)
    })
}

struct Got {
    outcome: warden_core::Outcome,
    /// Stdout as numbers (empty if it is not numbers).
    codes: Vec<i64>,
    stdout: String,
    stderr: String,
}

fn run_on(backend: &WasmBackend, i: &Invocation) -> Got {
    let (io, out, err) = RunIo::captured(Input::Empty);
    let outcome = backend.run_with_io(i, &io).expect("backend runs");
    let text = out.text();
    let codes = text
        .split_whitespace()
        .map(|c| c.parse().ok())
        .collect::<Option<Vec<i64>>>()
        .unwrap_or_default();
    Got {
        outcome,
        codes,
        stdout: text,
        stderr: err.text(),
    }
}

/// Runs `guest` with `grants` (on the key-value backend, tenant `tenant`).
fn attack(guest: &Guest, grants: &[&str], tenant: &str) -> Got {
    let mut i = inv(&guest.file(), &[]);
    i.capabilities = caps(grants);
    i.tenant = tenant.into();
    run_on(&kv_backend().0, &i)
}

fn i32s(args: &[i64]) -> String {
    args.iter()
        .map(|a| format!("(i32.const {})", *a as i32))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(call $r (call $f args…))`.
fn rec(f: &str, args: &[i64]) -> String {
    format!("(call $r (call ${f} {}))\n", i32s(args))
}

const PAGE2_END: i64 = 2 * 65536;

// ---------------------------------------------------------------------
// Pointers and lengths.

#[test]
fn hostile_pointers_and_lengths_are_status_codes() {
    // Data: "ns" at 1024, "key" at 1040, a value at 1056, "log" at 1100.
    let mut body = String::new();
    // log: pointer at -1 (0xFFFFFFFF), length -1, straddling the end,
    // empty at the very end, bad levels.
    body += &rec("log", &[2, -1, 2]);
    body += &rec("log", &[2, 0, -1]);
    body += &rec("log", &[2, PAGE2_END - 2, 4]);
    body += &rec("log", &[2, PAGE2_END, 0]);
    body += &rec("log", &[-1, 1100, 3]);
    body += &rec("log", &[5, 1100, 3]);
    body += &rec("log", &[i32::MIN as i64, 1100, 3]);
    // kv_set: a value of length -1 (4 GiB - 1) and 2 GiB: too large before
    // anything is read or allocated; a key of 2 GiB; a key past the end.
    body += &rec("kv_set", &[1024, 2, 1040, 3, 1056, -1]);
    body += &rec("kv_set", &[1024, 2, 1040, 3, 0, 0x7fff_ffff]);
    body += &rec("kv_set", &[1024, 2, 1040, 0x7fff_ffff, 1056, 5]);
    body += &rec("kv_set", &[1024, 2, PAGE2_END - 1, 3, 1056, 5]);
    body += &rec("kv_set", &[1024, -1, 1040, 3, 1056, 5]);
    // A good one, then gets with hostile buffers and out-pointers.
    body += &rec("kv_set", &[1024, 2, 1040, 3, 1056, 5]);
    body += &rec("kv_get", &[1024, 2, 1040, 3, -1, -1, 2000]);
    body += &rec("kv_get", &[1024, 2, 1040, 3, 2000, 100, PAGE2_END - 2]);
    body += &rec("kv_get", &[1024, 2, 1040, 3, 2000, 1, -4]);
    body += &rec("kv_get", &[1024, 2, 1040, 3, PAGE2_END - 4, 5, 2000]);
    // The buffer overlaps the key and the out-pointer: fine, the key was
    // copied first.
    body += &rec("kv_get", &[1024, 2, 1040, 3, 1040, 100, 1042]);
    // kv_list into a buffer near 4 GiB; kv_delete with a wrapped key.
    body += &rec("kv_list", &[1024, 2, 0, 0, 0, 0, -16, -1, 2000]);
    body += &rec("kv_list", &[1024, 2, 0, 0, 0, -1, 3000, 100, 2000]);
    body += &rec("kv_delete", &[1024, 2, -2, 3]);
    // http: lengths of 2 GiB and 4 GiB - 1, out-pointers outside memory
    // (refused before anything is sent).
    let http = |m: i64, ml: i64, u: i64, ul: i64, h: i64, hl: i64, b: i64, bl: i64| {
        rec(
            "http_request",
            &[m, ml, u, ul, h, hl, b, bl, 3000, 100, 2000, 2004],
        )
    };
    body += &http(1200, 3, 1210, 0x7fff_ffff, 0, 0, 0, 0);
    body += &http(1200, -1, 1210, 10, 0, 0, 0, 0);
    body += &http(1200, 3, 1210, 10, 0, -1, 0, 0);
    body += &http(1200, 3, 1210, 10, 0, 0, 0, -1);
    body += &rec(
        "http_request",
        &[1200, 3, 1210, 26, 0, 0, 0, 0, 3000, 100, 2000, PAGE2_END],
    );
    body += &rec(
        "http_request",
        &[1200, 3, 1210, 26, 0, 0, 0, 0, 3000, 100, -3, 2004],
    );
    // call: name and input lengths of 4 GiB - 1, out-pointers outside.
    body += &rec("call", &[1300, 1, 0, -1, 3000, 10, 2000, 2004]);
    body += &rec("call", &[1300, -1, 0, 0, 3000, 10, 2000, 2004]);
    body += &rec("call", &[1300, 1, 0, 0, 3000, 10, 2000, -1]);
    let guest = Guest::new(
        &[
            "log",
            "kv_get",
            "kv_set",
            "kv_delete",
            "kv_list",
            "http_request",
            "call",
        ],
        &body,
    )
    .data(1024, "ns")
    .data(1040, "key")
    .data(1056, "value")
    .data(1100, "log")
    .data(1200, "GET")
    // 127.0.0.1:9 (discard): never reached, the calls fail first.
    .data(1210, "http://127.0.0.1:9/nowhere");
    let got = attack(
        &guest,
        &[
            "log:write",
            "kv:write:ns",
            "net:http:127.0.0.1",
            "module:call:x",
        ],
        "pointers",
    );
    assert_eq!(
        got.codes,
        [
            // log
            INVALID, INVALID, INVALID, OK, INVALID, INVALID, INVALID, // kv_set
            TOO_LARGE, TOO_LARGE, TOO_LARGE, INVALID, TOO_LARGE, OK, // kv_get
            INVALID, INVALID, INVALID, INVALID, OK, // kv_list, kv_delete
            INVALID, TOO_LARGE, INVALID, // http
            TOO_LARGE, TOO_LARGE, TOO_LARGE, TOO_LARGE, INVALID, INVALID, // call
            TOO_LARGE, TOO_LARGE, INVALID,
        ],
        "{:?} {}",
        got.outcome,
        got.stderr
    );
    assert_eq!(got.outcome.status, Status::Exited, "{:?}", got.outcome);
}

#[test]
fn a_guest_without_a_plain_exported_memory_gets_invalid() {
    // Memory exported under another name: every pointer is INVALID (the
    // exit status is the code `log` returned).
    let tmp = TempDir::new("redteam-nomem");
    let path = tmp.path().join("nomem.wat");
    std::fs::write(
        &path,
        r#"(module
  (import "warden" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "mem") 1)
  (func (export "_start")
    (call $proc_exit (call $log (i32.const 2) (i32.const 0) (i32.const 1)))))"#,
    )
    .unwrap();
    let mut i = inv(&path, &[]);
    i.capabilities = caps(&["log:write"]);
    let r = run(&i);
    assert_eq!(r.outcome.exit_code, Some(INVALID as i32), "{:?}", r.outcome);
    assert!(r.outcome.logs.is_empty());
}

// ---------------------------------------------------------------------
// Clocks and randomness without grants.

/// A clock subscription at `at` (relative, monotonic, `ns`).
fn clock_sub(at: i64, ns: i64) -> String {
    format!(
        "(i32.store8 (i32.const {tag}) (i32.const 0))
         (i32.store (i32.const {id}) (i32.const 1))
         (i64.store (i32.const {timeout}) (i64.const {ns}))\n",
        tag = at + 8,
        id = at + 16,
        timeout = at + 24
    )
}

/// An fd_read subscription on stdin at `at`.
fn fd_sub(at: i64) -> String {
    format!(
        "(i32.store8 (i32.const {tag}) (i32.const 1))
         (i32.store (i32.const {fd}) (i32.const 0))\n",
        tag = at + 8,
        fd = at + 16
    )
}

#[test]
fn no_path_to_the_clock_without_clock_read() {
    // A clock subscription hidden behind an fd subscription; and a huge
    // subscription count.
    let mut body = String::new();
    body += &fd_sub(4096);
    body += &clock_sub(4096 + 48, 5_000_000_000);
    body += &rec("poll_oneoff", &[4096, 8192, 2, 2000]);
    body += &rec("poll_oneoff", &[4096, 8192, 0x7fff_ffff, 2000]);
    body += &rec("poll_oneoff", &[4096 + 48, 8192, -1, 2000]);
    // 0x05555556 subscriptions are 2^32 + 32 bytes: a byte count that
    // wraps to 32 in 32-bit arithmetic.
    body += &rec("poll_oneoff", &[4096 + 48, 8192, 0x0555_5556, 2000]);
    body += "(call $r (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 2000)))\n";
    let g = Guest::new(&["poll_oneoff", "clock_time_get"], &body);
    let t = std::time::Instant::now();
    let got = attack(&g, &[], "default");
    assert!(t.elapsed().as_secs() < 3, "it slept: {:?}", t.elapsed());
    assert_eq!(got.codes.len(), 5, "{:?} {:?}", got.codes, got.outcome);
    assert_eq!(got.codes[0], NOTCAPABLE, "{:?}", got.codes);
    // The unreadable ones fail as WASI makes them fail, never by sleeping
    // or reading the clock.
    assert_ne!(got.codes[1], OK, "{:?}", got.codes);
    assert_ne!(got.codes[2], OK, "{:?}", got.codes);
    assert_ne!(got.codes[3], OK, "{:?}", got.codes);
    assert_eq!(got.codes[4], NOTCAPABLE, "{:?}", got.codes);
}

#[test]
fn a_shared_memory_does_not_hide_a_clock_subscription() {
    // The gate reads the subscriptions through the guest's memory: a
    // shared memory must not make them unreadable (and so, ungated).
    let mut body = clock_sub(4096, 5_000_000_000);
    body += &rec("poll_oneoff", &[4096, 8192, 1, 2000]);
    let g = Guest::new(&["poll_oneoff"], &body).memory("(memory (export \"memory\") 2 2 shared)");
    // The pooling allocator refuses shared memories; a memory limit
    // beyond the pool's slots runs on demand, where they are allowed.
    for memory in [64 << 20, 5 << 30] {
        let mut i = inv(&g.file(), &[]);
        i.limits.memory_bytes = memory;
        let (io, out, _) = RunIo::captured(Input::Empty);
        let o = kv_backend().0.run_with_io(&i, &io).expect("runs");
        if o.status == Status::Error {
            // Refused (shared memories are off in every engine today):
            // nothing ran, nothing slept.
            let error = o.error.clone().unwrap_or_default();
            assert!(error.contains("shared"), "{o:?}");
            assert_eq!(out.text(), "");
            continue;
        }
        // It ran: the sleep must have been refused.
        assert_eq!(out.text().trim(), NOTCAPABLE.to_string(), "{o:?}");
        assert_eq!(
            violations_of(&o, "capability"),
            ["wasi_snapshot_preview1.poll_oneoff: clock:read not granted"]
        );
    }
}

// ---------------------------------------------------------------------
// Floods of refused calls.

#[test]
fn a_flood_of_distinct_denials_is_capped() {
    // 20,000 kv_get calls on namespaces aaa, aab, … (17,576 distinct),
    // none granted.
    let body = r#"
    (local $i i32) (local $denied i32)
    (loop $l
      (i32.store8 (i32.const 1024) (i32.add (i32.const 97) (i32.rem_u (local.get $i) (i32.const 26))))
      (i32.store8 (i32.const 1025) (i32.add (i32.const 97) (i32.rem_u (i32.div_u (local.get $i) (i32.const 26)) (i32.const 26))))
      (i32.store8 (i32.const 1026) (i32.add (i32.const 97) (i32.rem_u (i32.div_u (local.get $i) (i32.const 676)) (i32.const 26))))
      (if (i32.eq (call $kv_get (i32.const 1024) (i32.const 3) (i32.const 1040) (i32.const 1)
                                (i32.const 2000) (i32.const 10) (i32.const 2020))
                  (i32.const 1))
        (then (local.set $denied (i32.add (local.get $denied) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))
    (call $r (local.get $denied))
    "#;
    let g = Guest::new(&["kv_get"], "(call $flood)")
        .func(&format!("(func $flood {body})"))
        .data(1040, "k");
    let path = g.file();
    let mut i = inv(&path, &[]);
    i.capabilities = caps(&["kv:read:granted"]);
    let got = run_on(&kv_backend().0, &i);
    assert_eq!(got.codes, [20_000], "{:?}", got.outcome);
    assert_eq!(got.outcome.status, Status::Violation);
    let v = violations_of(&got.outcome, "capability");
    assert!(v.len() <= 65, "{} violations", v.len());
    assert!(
        v.last().unwrap().contains("more denied host calls"),
        "{v:?}"
    );
}

// ---------------------------------------------------------------------
// Key-value store.

#[test]
fn kv_names_and_grants_hold() {
    // Namespaces at 1024 (length in the call), key "k" at 1500.
    let ns = |name: &[u8], set: bool| -> (Vec<u8>, bool) { (name.to_vec(), set) };
    let cases = [
        ns(b"a/b", true),
        ns(b"a\0b", true),
        ns("ñ".as_bytes(), true),
        ns(b"*", true),
        ns(b"", true),
        ns(b".x", true),
        ns(b"-x", true),
        ns(b"..", true),
        ns(b"a:b", true),
        ns(b"\xff\xfe", true),
        ns(&[b'a'; 257], true),
        // Valid names: write only where kv:write covers it.
        ns(&[b'a'; 256], true),
        ns(b"other", true),
        ns(b"other", false),
        ns(b"ns", true),
        ns(b"ns", false),
    ];
    let mut g = Guest::new(&["kv_set", "kv_get"], "").data(1500, "k");
    let mut body = String::new();
    for (n, (name, set)) in cases.iter().enumerate() {
        let at = 4096 + 512 * n as i64;
        g = g.data(at as u32, name);
        let len = name.len() as i64;
        body += &if *set {
            rec("kv_set", &[at, len, 1500, 1, 1500, 1])
        } else {
            rec("kv_get", &[at, len, 1500, 1, 3000, 10, 2000])
        };
    }
    // Keys: empty, 1 KiB + 1, and bytes that would be paths elsewhere.
    g = g.data(1600, b"../\0/etc/passwd\xff*");
    body += &rec("kv_set", &[4096 + 512 * 14, 2, 1600, 0, 1500, 1]);
    body += &rec("kv_set", &[4096 + 512 * 14, 2, 1600, 1025, 1500, 1]);
    body += &rec("kv_set", &[4096 + 512 * 14, 2, 1600, 17, 1500, 1]);
    body += &rec("kv_get", &[4096 + 512 * 14, 2, 1600, 17, 3000, 10, 2000]);
    g.body = body;
    let got = attack(&g, &["kv:read:*", "kv:write:ns"], "names");
    assert_eq!(
        got.codes,
        [
            INVALID, INVALID, INVALID, INVALID, INVALID, INVALID, INVALID, INVALID, INVALID,
            INVALID, TOO_LARGE, DENIED, DENIED, NOT_FOUND, OK, OK, INVALID, TOO_LARGE, OK, OK,
        ],
        "{:?}",
        got.outcome
    );
    // Only the two valid refusals are violations; malformed names are not.
    let v = violations_of(&got.outcome, "capability");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.starts_with("warden.kv_set: kv:write:")));
}

#[test]
fn tenant_names_cannot_leave_the_kv_directory() {
    let g = Guest::new(&["kv_set"], &rec("kv_set", &[1024, 2, 1040, 1, 1040, 1]))
        .data(1024, "ns")
        .data(1040, "k");
    let path = g.file();
    for tenant in [
        "../escape",
        "a/b",
        "/abs",
        "",
        ".hidden",
        "-x",
        "a\0b",
        "t\u{e9}",
        &"t".repeat(65),
    ] {
        let mut i = inv(&path, &[]);
        i.capabilities = caps(&["kv:write:ns"]);
        i.tenant = tenant.into();
        let (io, _, _) = RunIo::captured(Input::Empty);
        assert!(
            kv_backend().0.run_with_io(&i, &io).is_err(),
            "tenant {tenant:?} was accepted"
        );
    }
    let base = kv_backend().1.path();
    assert!(!base.join("escape.redb").exists());
    assert!(!base.join("stores").join("a").exists());
}

/// A backend with its key-value stores in `dir` (made by the caller).
fn kv_backend_in(dir: &std::path::Path) -> WasmBackend {
    WasmBackend::with_config(WasmConfig {
        kv_dir: Some(dir.to_path_buf()),
        ..WasmConfig::default()
    })
    .expect("backend")
}

fn kv_set_once(backend: &WasmBackend, tenant: &str) -> Got {
    let g = Guest::new(&["kv_set"], &rec("kv_set", &[1024, 2, 1040, 1, 1040, 1]))
        .data(1024, "ns")
        .data(1040, "k");
    let mut i = inv(&g.file(), &[]);
    i.capabilities = caps(&["kv:write:ns"]);
    i.tenant = tenant.into();
    run_on(backend, &i)
}

#[test]
fn a_planted_tenant_file_is_never_followed_or_shared() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("redteam-plant");
    let kv = tmp.path().join("kv");
    std::fs::create_dir(&kv).unwrap();
    std::fs::set_permissions(&kv, std::fs::Permissions::from_mode(0o700)).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A symlink to a file that does not exist yet (it would be created),
    // one to an empty file (it would be made a database), and a hard link.
    std::os::unix::fs::symlink(outside.join("new"), kv.join("dangling.redb")).unwrap();
    std::fs::write(outside.join("empty"), "").unwrap();
    std::os::unix::fs::symlink(outside.join("empty"), kv.join("empty.redb")).unwrap();
    std::fs::write(outside.join("linked"), "").unwrap();
    std::fs::hard_link(outside.join("linked"), kv.join("linked.redb")).unwrap();
    let backend = kv_backend_in(&kv);
    for tenant in ["dangling", "empty", "linked"] {
        let got = kv_set_once(&backend, tenant);
        assert_eq!(got.codes, [6], "tenant {tenant}: {:?}", got.outcome);
    }
    assert!(
        !outside.join("new").exists(),
        "a file was made through the symlink"
    );
    assert_eq!(std::fs::read(outside.join("empty")).unwrap(), b"");
    assert_eq!(std::fs::read(outside.join("linked")).unwrap(), b"");
    // An ordinary tenant still works, and its file is private.
    let got = kv_set_once(&backend, "fine");
    assert_eq!(got.codes, [OK], "{:?}", got.outcome);
    let mode = std::fs::metadata(kv.join("fine.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn a_kv_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("redteam-kvdir");
    let kv = tmp.path().join("kv");
    std::fs::create_dir(&kv).unwrap();
    std::fs::set_permissions(&kv, std::fs::Permissions::from_mode(0o777)).unwrap();
    let backend = kv_backend_in(&kv);
    let got = kv_set_once(&backend, "t");
    assert_eq!(got.codes, [6], "{:?}", got.outcome);
    assert!(!kv.join("t.redb").exists());
}

#[test]
fn kv_operation_and_byte_quotas_hold() {
    // 10,001 gets: the last is LIMIT.
    let g = kv_get_loop(10_001);
    let got = attack(&g, &["kv:read:ns"], "quota-ops");
    assert_eq!(got.codes, [10_000, 1], "{:?}", got.outcome);

    // 70 values of 1 MiB: at most 64 MiB written per run.
    let body = r#"
    (local $i i32) (local $ok i32) (local $limit i32) (local $rc i32)
    (loop $l
      (i32.store (i32.const 1040) (local.get $i))
      (local.set $rc (call $kv_set (i32.const 1024) (i32.const 2) (i32.const 1040) (i32.const 4)
                                   (i32.const 65536) (i32.const 1048576)))
      (if (i32.eqz (local.get $rc)) (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
      (if (i32.eq (local.get $rc) (i32.const 5)) (then (local.set $limit (i32.add (local.get $limit) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 70))))
    (call $r (local.get $ok))
    (call $r (local.get $limit))
    ;; Then 260 reads of one of them (into 65536..): at most 256 MiB read.
    (local.set $i (i32.const 0)) (local.set $ok (i32.const 0)) (local.set $limit (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 0))
    (loop $l
      (local.set $rc (call $kv_get (i32.const 1024) (i32.const 2) (i32.const 1040) (i32.const 4)
                                   (i32.const 65536) (i32.const 1048576) (i32.const 2020)))
      (if (i32.eqz (local.get $rc)) (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
      (if (i32.eq (local.get $rc) (i32.const 5)) (then (local.set $limit (i32.add (local.get $limit) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 260))))
    (call $r (local.get $ok))
    (call $r (local.get $limit))
    "#;
    let g = Guest::new(&["kv_set", "kv_get"], "(call $bytes)")
        .func(&format!("(func $bytes {body})"))
        .memory("(memory (export \"memory\") 20)")
        .data(1024, "ns");
    let got = attack(&g, &["kv:write:ns"], "quota-bytes");
    assert_eq!(got.codes, [63, 7, 256, 4], "{:?}", got.outcome);
}

// ---------------------------------------------------------------------
// HTTP: a hostile server on a public address of the tests' network
// namespace (see common/net.rs), the same server on that namespace's
// loopback (standing for the host's, which no request may reach), and
// hostile requests.

mod server {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    pub struct Server {
        pub port: u16,
        /// Request heads received, in order.
        pub heads: Mutex<Vec<String>>,
        /// Paths of dripping responses that ended because the client went
        /// away.
        pub drips_ended: Mutex<Vec<String>>,
    }

    impl Server {
        /// Requests whose request line contains `needle`.
        pub fn hits(&self, needle: &str) -> usize {
            let heads = self.heads();
            heads
                .iter()
                .filter(|h| h.lines().next().unwrap_or("").contains(needle))
                .count()
        }

        /// Requests that arrived on the loopback address.
        pub fn loopback_hits(&self) -> usize {
            self.heads()
                .iter()
                .filter(|h| h.starts_with("LOOPBACK "))
                .count()
        }

        pub fn any_head(&self, f: impl Fn(&str) -> bool) -> bool {
            self.heads().iter().any(|h| f(h))
        }

        fn heads(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
            self.heads.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn last_head(&self, needle: &str) -> Option<String> {
            let heads = self.heads();
            heads
                .iter()
                .rev()
                .find(|h| h.lines().next().unwrap_or("").contains(needle))
                .cloned()
        }
    }

    /// The server (started inside the namespace on first use): the same
    /// port on the public address and on the loopback one.
    pub fn get() -> &'static Server {
        static S: OnceLock<Server> = OnceLock::new();
        static STARTED: OnceLock<()> = OnceLock::new();
        let server = S.get_or_init(|| {
            let public = TcpListener::bind((super::PUBLIC, 0)).expect("bind the public address");
            let port = public.local_addr().unwrap().port();
            let lo = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
            LISTENERS.set([public, lo]).unwrap();
            Server {
                port,
                heads: Mutex::new(Vec::new()),
                drips_ended: Mutex::new(Vec::new()),
            }
        });
        STARTED.get_or_init(|| {
            for n in 0..2 {
                std::thread::spawn(move || {
                    for stream in LISTENERS.get().unwrap()[n].incoming().flatten() {
                        let lo = n == 1;
                        std::thread::spawn(move || serve(stream, get(), lo));
                    }
                });
            }
        });
        server
    }

    static LISTENERS: OnceLock<[TcpListener; 2]> = OnceLock::new();

    /// Serves one connection; `lo`: it came in on the loopback address
    /// (recorded with a `LOOPBACK ` prefix to its head).
    fn serve(stream: TcpStream, server: &Server, lo: bool) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            head.push_str(&line);
            if line == "\r\n" || head.len() > 1 << 20 {
                break;
            }
        }
        server.heads().push(if lo {
            format!("LOOPBACK {head}")
        } else {
            head.clone()
        });
        let full = head.split(' ').nth(1).unwrap_or("").to_string();
        let path = full.split('?').next().unwrap_or("").to_string();
        let mut s = stream;
        let stop = Instant::now() + Duration::from_secs(30);
        match path.as_str() {
            "/hello" => {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
                );
            }
            "/echo" => {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
            }
            // Headers, then the body one byte at a time, forever.
            "/drip" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
                while Instant::now() < stop && s.write_all(b"x").is_ok() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if Instant::now() < stop {
                    server
                        .drips_ended
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(full.clone());
                }
            }
            // The head itself, one byte at a time, forever.
            "/drip-head" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                while Instant::now() < stop && s.write_all(b"X").is_ok() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if Instant::now() < stop {
                    server
                        .drips_ended
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(full.clone());
                }
            }
            // An endless chunked body, as fast as it goes.
            "/chunked-forever" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("10000\r\n{}\r\n", "c".repeat(0x10000));
                while Instant::now() < stop && s.write_all(chunk.as_bytes()).is_ok() {}
            }
            // Endless response headers.
            "/huge-headers" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
                while Instant::now() < stop && s.write_all(line.as_bytes()).is_ok() {}
            }
            // A length of 10 GB announced, 3 bytes sent.
            "/length-lie" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\nabc");
            }
            // A redirect to the metadata address.
            "/redirect" => {
                let _ = s.write_all(
                    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            _ => {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
                );
            }
        }
    }
}

/// One request a guest makes.
struct Req<'a> {
    method: &'a str,
    url: String,
    headers: &'a str,
    body: &'a str,
}

fn req(method: &'static str, url: impl Into<String>) -> Req<'static> {
    Req {
        method,
        url: url.into(),
        headers: "",
        body: "",
    }
}

/// A guest making `reqs` in order; records `rc status` of each. Its
/// response buffer holds 256 bytes.
fn http_guest(reqs: &[Req<'_>]) -> Guest {
    let mut g = Guest::new(&["http_request"], "").memory("(memory (export \"memory\") 2)");
    let mut body = String::new();
    for (n, r) in reqs.iter().enumerate() {
        let base = 65536 + 4096 * n as i64;
        assert!(n < 16 && r.url.len() < 1500 && r.headers.len() < 2000 && r.body.len() < 300);
        g = g
            .data(base as u32, r.method)
            .data(base as u32 + 32, &r.url)
            .data(base as u32 + 1600, r.headers)
            .data(base as u32 + 3700, r.body);
        body += &format!(
            "(i32.store (i32.const 2004) (i32.const 0))\n{}(call $r (i32.load (i32.const 2004)))\n",
            rec(
                "http_request",
                &[
                    base,
                    r.method.len() as i64,
                    base + 32,
                    r.url.len() as i64,
                    base + 1600,
                    r.headers.len() as i64,
                    base + 3700,
                    r.body.len() as i64,
                    3000,
                    256,
                    2000,
                    2004,
                ],
            )
        );
    }
    g.body = body;
    g
}

/// A backend whose HTTP calls time out after `ms`, names resolved from the
/// tests' hosts file.
fn http_backend(ms: u64) -> WasmBackend {
    net::backend_with(warden_wasm::HttpConfig {
        timeout: std::time::Duration::from_millis(ms),
        ..warden_wasm::HttpConfig::default()
    })
}

/// The same, names resolved by the system's resolver.
fn http_backend_system_resolver(ms: u64) -> WasmBackend {
    WasmBackend::with_config(WasmConfig {
        http: warden_wasm::HttpConfig {
            timeout: std::time::Duration::from_millis(ms),
            ..warden_wasm::HttpConfig::default()
        },
        ..WasmConfig::default()
    })
    .expect("backend")
}

/// `net:http:` of the public test address.
fn public_grant() -> String {
    format!("net:http:{PUBLIC}")
}

fn http_attack(backend: &WasmBackend, grants: &[&str], reqs: &[Req<'_>]) -> Got {
    let mut i = inv(&http_guest(reqs).file(), &[]);
    i.capabilities = caps(grants);
    run_on(backend, &i)
}

/// The `rc` of each request (dropping the statuses).
fn rcs(got: &Got) -> Vec<i64> {
    got.codes.iter().step_by(2).copied().collect()
}

#[test]
fn url_host_confusion_never_reaches_an_ungranted_host() {
    in_net(|| {
        let port = server::get().port;
        let before = server::get().hits("/confused");
        let mut urls = Vec::new();
        // Each confusion against the loopback address and against a
        // public one the run could otherwise reach.
        for addr in ["127.0.0.1", PUBLIC] {
            urls.extend([
                format!("http://granted.test@{addr}:{port}/confused"),
                format!("http://granted.test:80@{addr}:{port}/confused"),
                format!("http://{addr}:{port}#@granted.test/confused"),
                format!("http://{addr}:{port}?@granted.test/confused"),
                format!("http://granted.test\\@{addr}:{port}/confused"),
                format!("http://{addr}:{port}\\@granted.test/confused"),
                format!("http://{addr}:{port}/@granted.test/confused"),
                format!("http://[::ffff:{addr}]:{port}/confused"),
                format!("http://{addr}.:{port}/confused"),
                format!("http://granted.test.{addr}.nip.io:{port}/confused"),
                format!("http:// {addr}:{port}/confused"),
                format!("http://{addr}:{port} /confused"),
            ]);
        }
        urls.extend([
            format!("http://[::ffff:7f00:1]:{port}/confused"),
            format!("http://[::ffff:b16:212c]:{port}/confused"),
            format!("http://2130706433:{port}/confused"),
            format!("http://185999660:{port}/confused"),
            format!("http://0x7f000001:{port}/confused"),
            format!("http://0x7f.1:{port}/confused"),
            format!("http://0177.0.0.1:{port}/confused"),
            format!("http://127.1:{port}/confused"),
            format!("http://%31%32%37.0.0.1:{port}/confused"),
            format!("http://localhost:{port}/confused"),
            format!("http://api.test:{port}/confused"),
        ]);
        let backend = http_backend(2000);
        for chunk in urls.chunks(10) {
            let reqs: Vec<Req<'_>> = chunk.iter().map(|u| req("GET", u.clone())).collect();
            let got = http_attack(
                &backend,
                &["net:http:granted.test", "net:http:*.granted.test"],
                &reqs,
            );
            for (url, rc) in chunk.iter().zip(rcs(&got)) {
                assert!(rc == DENIED || rc == INVALID, "{url}: rc {rc}");
            }
        }
        assert_eq!(
            server::get().hits("/confused"),
            before,
            "an ungranted host was reached"
        );
    })
}

/// Loopback is never reached, granted or not, by address or by name, in
/// any of its spellings, whichever resolver the names go through: each
/// call is refused (DENIED, a `net` violation) or fails (a name that does
/// not resolve), and nothing arrives on the loopback listener.
#[test]
fn loopback_is_never_reached_even_when_granted() {
    in_net(|| {
        let port = server::get().port;
        let before = server::get().loopback_hits();
        let hosts = [
            "127.0.0.1",
            "127.0.0.1.",
            "127.1",
            "127.255.255.254",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::1]",
            "localhost",
            "LOCALHOST",
            "localhost.",
            "loop.test",
            "mixed.test.",
            "granted.test.127.0.0.1.nip.io",
        ];
        let grants = [
            "net:http:127.0.0.1",
            "net:http:127.255.255.254",
            "net:http:[::1]",
            "net:http:[::ffff:127.0.0.1]",
            "net:http:[::127.0.0.1]",
            "net:http:[64:ff9b::7f00:1]",
            "net:http:[2002:7f00:1::1]",
            "net:http:localhost",
            "net:http:loop.test",
            "net:http:*",
        ];
        for backend in [http_backend(2000), http_backend_system_resolver(2000)] {
            for chunk in hosts.chunks(10) {
                let reqs: Vec<Req<'_>> = chunk
                    .iter()
                    .map(|h| req("GET", format!("http://{h}:{port}/lo")))
                    .collect();
                let got = http_attack(&backend, &grants, &reqs);
                for (host, rc) in chunk.iter().zip(rcs(&got)) {
                    assert!(
                        rc == DENIED || rc == FAILED || rc == INVALID,
                        "{host}: rc {rc} {:?}",
                        got.outcome
                    );
                }
                for c in &got.outcome.connections {
                    assert!(c.bytes_out.is_none(), "{c:?}");
                }
            }
        }
        assert_eq!(
            server::get().loopback_hits(),
            before,
            "a loopback address was reached"
        );
        // Each refusal is a violation of the run and a refused connection
        // in its report.
        let got = http_attack(
            &http_backend(2000),
            &["net:http:127.0.0.1", "net:http:localhost"],
            &[
                req("GET", format!("http://127.0.0.1:{port}/lo")),
                req("GET", format!("http://localhost:{port}/lo")),
            ],
        );
        assert_eq!(rcs(&got), [DENIED, DENIED]);
        assert_eq!(got.outcome.status, Status::Violation);
        let refused: Vec<(&str, bool)> = got
            .outcome
            .connections
            .iter()
            .map(|c| (c.dest.as_str(), c.allowed))
            .collect();
        assert_eq!(refused, [("127.0.0.1", false), ("localhost", false)]);
        assert_eq!(
            violations_of(&got.outcome, "net").len(),
            2,
            "{:?}",
            got.outcome
        );
        // The public address of the same server answers the same call.
        let got = http_attack(
            &http_backend(2000),
            &[&public_grant()],
            &[req("GET", format!("http://{PUBLIC}:{port}/hello"))],
        );
        assert_eq!(got.codes, [OK, 200], "{:?}", got.outcome);
    })
}

#[test]
fn only_http_and_https_and_only_known_methods() {
    in_net(|| {
        let port = server::get().port;
        let backend = http_backend(2000);
        let reqs = [
            req("GET", "file:///etc/passwd"),
            req("GET", format!("ftp://{PUBLIC}:{port}/scheme")),
            req("GET", "data:text/plain,hello"),
            req("GET", format!("gopher://{PUBLIC}:{port}/scheme")),
            req("GET", format!("ws://{PUBLIC}:{port}/scheme")),
            req("GET", format!("//{PUBLIC}:{port}/scheme")),
            req("GET", "/scheme"),
            req("CONNECT", format!("http://{PUBLIC}:{port}/scheme")),
            req("TRACE", format!("http://{PUBLIC}:{port}/scheme")),
            req("GET\r\nX: y", format!("http://{PUBLIC}:{port}/scheme")),
        ];
        let got = http_attack(&backend, &["net:http:*"], &reqs);
        assert_eq!(rcs(&got), [INVALID; 10], "{:?}", got.outcome);
        assert_eq!(server::get().hits("/scheme"), 0);
        // Scheme and host case do not matter; a lower-case method is fine.
        let reqs = [
            req("get", format!("HTTP://{PUBLIC}:{port}/hello")),
            req("GET", format!("http://API.test:{port}/hello")),
        ];
        let got = http_attack(&backend, &[&public_grant(), "net:http:api.test"], &reqs);
        assert_eq!(got.codes, [OK, 200, OK, 200], "{:?}", got.outcome);
    })
}

#[test]
fn request_headers_cannot_smuggle_or_redirect() {
    in_net(|| {
        let port = server::get().port;
        let backend = http_backend(2000);
        let url = format!("http://{PUBLIC}:{port}/echo");
        let grant = public_grant();
        let bad = [
            "Host: evil.test\n",
            "host : evil.test\n",
            "HOST:evil.test\n",
            "X-A: b\rInjected: yes\n",
            "X-A: b\0c\n",
            "X\r\nInjected: yes\n",
            "Transfer-Encoding: chunked\n",
            "Connection: upgrade\n",
            "Upgrade: websocket\n",
            "Content-Length: 0\n",
            "Content-Length: 100\n",
            "Expect: 100-continue\n",
            "TE: trailers\n",
            "Trailer: X-A\n",
            "Keep-Alive: timeout=100\n",
            "Proxy-Connection: keep-alive\n",
            "no colon here\n",
            ": empty name\n",
        ];
        for chunk in bad.chunks(9) {
            let reqs: Vec<Req<'_>> = chunk
                .iter()
                .map(|h| Req {
                    method: "POST",
                    url: url.clone(),
                    headers: h,
                    body: "payload",
                })
                .collect();
            let got = http_attack(&backend, &[&grant], &reqs);
            for (h, rc) in chunk.iter().zip(rcs(&got)) {
                assert_eq!(rc, INVALID, "header {h:?} was sent");
            }
        }
        assert!(server::get().last_head("Injected").is_none());
        let smuggled = server::get().any_head(|h| h.to_ascii_lowercase().contains("evil.test"));
        assert!(!smuggled, "a Host header went out");
        // Ordinary headers go through as given.
        let reqs = [Req {
            method: "POST",
            url: url.clone(),
            headers: "X-Trace: 1\r\nAuthorization: Bearer t\n",
            body: "payload",
        }];
        let got = http_attack(&backend, &[&grant], &reqs);
        assert_eq!(rcs(&got), [OK], "{:?}", got.outcome);
        let head = server::get().last_head("POST /echo").unwrap();
        assert!(
            head.contains("x-trace: 1\r\n") || head.contains("X-Trace: 1\r\n"),
            "{head}"
        );
    })
}

#[test]
fn a_hostile_server_cannot_hold_or_flood_a_call() {
    use std::time::{Duration, Instant};
    in_net(|| {
        let port = server::get().port;
        let backend = http_backend(500);
        let grant = public_grant();
        let url = |p: &str| format!("http://{PUBLIC}:{port}{p}");
        // Each within the 500 ms per-call deadline (+ slack), even when the
        // server keeps sending a byte now and then.
        for (path, expect) in [
            ("/drip?hostile", vec![7]),
            ("/drip-head?hostile", vec![7]),
            ("/chunked-forever", vec![TOO_LARGE]),
            ("/huge-headers", vec![8]),
            ("/length-lie", vec![TOO_LARGE, 8, 7]),
        ] {
            let t = Instant::now();
            let got = http_attack(&backend, &[&grant], &[req("GET", url(path))]);
            let took = t.elapsed();
            assert!(
                expect.contains(&rcs(&got)[0]),
                "{path}: {:?} {:?}",
                got.codes,
                got.outcome
            );
            assert!(took < Duration::from_secs(3), "{path}: {took:?}");
            assert_eq!(
                got.outcome.status,
                Status::Exited,
                "{path}: {:?}",
                got.outcome
            );
        }
        // The client really hung up on the dripping servers (no thread of
        // Warden's is left reading them).
        let t = Instant::now();
        let ended = |p: &str| {
            server::get()
                .drips_ended
                .lock()
                .unwrap()
                .iter()
                .any(|e| e == p)
        };
        while !(ended("/drip?hostile") && ended("/drip-head?hostile")) {
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "a dripping connection stayed open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Redirects to the metadata address come back as they are.
        let got = http_attack(&backend, &[&grant], &[req("GET", url("/redirect"))]);
        assert_eq!(got.codes, [OK, 307]);
    })
}

#[test]
fn many_concurrent_slow_calls_all_end_at_their_deadline() {
    use std::time::{Duration, Instant};
    let (port, path) = in_net(|| {
        let reqs: Vec<Req<'_>> = (0..4)
            .map(|_| {
                req(
                    "GET",
                    format!("http://{PUBLIC}:{}/drip", server::get().port),
                )
            })
            .collect();
        (server::get().port, http_guest(&reqs).file())
    });
    let _ = port;
    let backend = http_backend(300);
    let t = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let backend = backend.clone();
            let path = path.clone();
            // Each run on a thread (and runtime) of its own in the namespace.
            std::thread::spawn(move || {
                in_net(move || {
                    let mut i = inv(&path, &[]);
                    i.capabilities = caps(&[&public_grant()]);
                    run_on(&backend, &i).codes
                })
            })
        })
        .collect();
    for th in threads {
        let codes = th.join().unwrap();
        assert_eq!(codes.iter().step_by(2).copied().collect::<Vec<_>>(), [7; 4]);
    }
    // 8 runs × 4 calls × 300 ms, 8 at a time: about 1.2 s (not 30 s, when
    // the server would stop dripping).
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn the_run_deadline_bounds_a_dripping_call() {
    use std::time::{Duration, Instant};
    in_net(|| {
        let port = server::get().port;
        // A per-call deadline of 10 s, a run of 400 ms.
        let backend = http_backend(10_000);
        let mut i = inv(
            &http_guest(&[req("GET", format!("http://{PUBLIC}:{port}/drip"))]).file(),
            &[],
        );
        i.capabilities = caps(&[&public_grant()]);
        i.limits.wall_time = Duration::from_millis(400);
        let t = Instant::now();
        let got = run_on(&backend, &i);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            got.outcome.status == Status::Timeout || rcs(&got) == [7],
            "{:?} {:?}",
            got.codes,
            got.outcome
        );
    })
}

// ---------------------------------------------------------------------
// Module-to-module calls.

fn callee(name: &str, path: &std::path::Path, grants: Option<&[&str]>) -> warden_core::ModuleRef {
    warden_core::ModuleRef {
        name: name.into(),
        path: path.to_path_buf(),
        grants: grants.map(caps),
    }
}

/// `hostcall NAME INPUT` with `grants` and the modules `modules`.
fn calling(
    grants: &[&str],
    modules: Vec<warden_core::ModuleRef>,
    name: &str,
    input: &str,
) -> Invocation {
    let mut i = inv(&rust("hostcall"), &[name, input]);
    i.capabilities = caps(grants);
    i.modules = modules;
    i
}

#[test]
fn a_callee_cannot_outspend_its_callers_cpu_time_or_memory() {
    use std::time::Duration;
    // CPU time (no fuel): a callee spinning forever stops when the
    // caller's CPU time is used up, not after a budget of its own.
    let spinner = callee("spinner", &wat("spin.wat"), None);
    let mut i = calling(
        &["module:call:spinner"],
        vec![spinner.clone()],
        "spinner",
        "",
    );
    i.limits.cpu_time = Some(Duration::from_millis(300));
    let r = run(&i);
    assert!(
        r.outcome.status == Status::CpuLimit || r.stdout.starts_with("rc=0 exit=137"),
        "{:?} {}",
        r.outcome,
        r.stdout
    );
    assert!(r.outcome.cpu_ms < 1000, "{:?}", r.outcome);
    // Spinning twice in a row: the second call finds no CPU time left.
    let relay = callee("relay", &rust("hostcall"), None);
    let mut i = calling(
        &["module:call:relay", "module:call:spinner"],
        vec![relay, spinner],
        "relay",
        "call spinner x",
    );
    i.limits.cpu_time = Some(Duration::from_millis(300));
    let r = run(&i);
    assert!(r.outcome.cpu_ms < 1000, "{:?}", r.outcome);

    // Memory: the callee gets what the caller does not hold; growing
    // past it is refused (the callee's memory_limit, exit status 137).
    let bomb = callee("bomb", &wat("grow_bomb.wat"), None);
    let mut i = calling(&["module:call:bomb"], vec![bomb], "bomb", "");
    i.limits.memory_bytes = 32 << 20;
    let r = run(&i);
    assert_eq!(r.stdout, "rc=0 exit=137\n", "{:?}", r.outcome);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert!(r.outcome.peak_memory_bytes <= 32 << 20);
}

#[test]
fn a_callee_cannot_read_its_callers_stdin_or_flood_its_caller() {
    // The callee reads its stdin: the call's input only, never what the
    // caller was given.
    let cat = callee("cat", &rust("cat"), None);
    let i = calling(&["module:call:cat"], vec![cat.clone()], "cat", "");
    let r = run_with(&i, Input::Bytes(b"the caller's secret stdin".to_vec()));
    assert_eq!(r.stdout, "rc=0 exit=0\n", "{:?}", r.outcome);

    // An endless writer: its reply is capped (1 MiB), the caller goes on.
    let flood = callee("flood", &wat("flood.wat"), None);
    let i = calling(&["module:call:flood"], vec![flood], "flood", "");
    let r = run(&i);
    assert_eq!(r.outcome.status, Status::Exited, "{:?}", r.outcome);
    assert!(
        r.stdout.starts_with("rc=0 exit=137\n"),
        "{}",
        &r.stdout[..40]
    );
    assert!(r.stdout.len() <= (1 << 20) + 64, "{}", r.stdout.len());

    // A callee that logs without end and has 20,000 calls refused: the
    // caller's log and violations stay within their caps.
    let body = r#"
    (local $i i32)
    (loop $l
      (drop (call $log (i32.const 2) (i32.const 1040) (i32.const 4)))
      (i32.store8 (i32.const 1024) (i32.add (i32.const 97) (i32.rem_u (local.get $i) (i32.const 26))))
      (i32.store8 (i32.const 1025) (i32.add (i32.const 97) (i32.rem_u (i32.div_u (local.get $i) (i32.const 26)) (i32.const 26))))
      (i32.store8 (i32.const 1026) (i32.add (i32.const 97) (i32.rem_u (i32.div_u (local.get $i) (i32.const 676)) (i32.const 26))))
      (drop (call $kv_get (i32.const 1024) (i32.const 3) (i32.const 1040) (i32.const 1)
                          (i32.const 2000) (i32.const 10) (i32.const 2020)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 20000))))
    "#;
    let noisy = Guest::new(&["log", "kv_get"], "(call $noise)")
        .func(&format!("(func $noise {body})"))
        .data(1040, "spam");
    let noisy = callee("noisy", &noisy.file(), None);
    let i = calling(
        &["module:call:noisy", "log:write", "kv:read:granted"],
        vec![noisy],
        "noisy",
        "",
    );
    let r = run_on(&kv_backend().0, &i);
    assert_eq!(r.stdout, "rc=0 exit=0\n", "{:?}", r.outcome);
    assert!(r.outcome.logs.len() <= 256, "{}", r.outcome.logs.len());
    assert!(r.outcome.logs_truncated);
    // The callee's 64 kinds of refusal and its count of the rest: the
    // caller keeps 64, and says that more are missing.
    let last = &r.outcome.violations.last().unwrap().detail;
    assert!(last.ends_with("more in called modules"), "{last}");
    assert!(
        r.outcome.violations.len() <= 130,
        "{}",
        r.outcome.violations.len()
    );
}

/// A called module's requests are its caller's run's: listed in the
/// caller's report (it has none of its own), a refused one a violation
/// there too.
#[test]
fn a_callees_connections_are_in_its_callers_report() {
    in_net(|| {
        let port = server::get().port;
        let g = http_guest(&[
            req("GET", format!("http://api.test:{port}/hello")),
            req("GET", format!("http://meta.test:{port}/hello")),
        ]);
        let fetcher = callee("fetcher", &g.file(), None);
        let i = calling(
            &[
                "module:call:fetcher",
                "net:http:api.test",
                "net:http:meta.test",
            ],
            vec![fetcher],
            "fetcher",
            "",
        );
        let (io, out, _) = RunIo::captured(Input::Empty);
        let outcome = net::backend().run_with_io(&i, &io).expect("runs");
        assert_eq!(
            out.text(),
            format!("rc=0 exit=0\n{OK} 200 {DENIED} 0 "),
            "{outcome:?}"
        );
        let c: Vec<(&str, bool)> = outcome
            .connections
            .iter()
            .map(|c| (c.dest.as_str(), c.allowed))
            .collect();
        assert_eq!(c, [(PUBLIC, true), ("meta.test", false)], "{outcome:?}");
        let v = violations_of(&outcome, "net");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("in module fetcher: "), "{v:?}");
    })
}

#[test]
fn a_callees_own_grants_never_widen_its_callers() {
    in_net(a_callees_own_grants_never_widen_its_callers_in_net)
}

fn a_callees_own_grants_never_widen_its_callers_in_net() {
    let port = server::get().port;
    // The callee declares everything; the caller has kv:read:orders and
    // net:http:*.example.test only.
    let g = http_guest(&[req("GET", format!("http://{PUBLIC}:{port}/greedy"))]);
    let mut body = g.body.clone();
    body += &rec("kv_set", &[1024, 6, 1040, 1, 1040, 1]);
    body += &rec("kv_get", &[1030, 5, 1040, 1, 2000, 10, 2020]);
    body += &rec("kv_get", &[1024, 6, 1040, 1, 2000, 10, 2020]);
    let mut g = g.data(1024, "orders").data(1030, "other").data(1040, "k");
    g.imports = vec!["http_request", "kv_set", "kv_get"];
    g.body = body;
    let greedy = callee(
        "greedy",
        &g.file(),
        Some(&["net:http:*", "kv:write:*", "log:write"]),
    );
    let i = calling(
        &[
            "module:call:greedy",
            "kv:read:orders",
            "net:http:*.example.test",
        ],
        vec![greedy],
        "greedy",
        "",
    );
    let before = server::get().hits("/greedy");
    let r = run_on(&kv_backend().0, &i);
    // hostcall prints `rc=0 exit=0` then the callee's output.
    assert_eq!(
        r.stdout,
        format!("rc=0 exit=0\n{DENIED} 0 {DENIED} {DENIED} {NOT_FOUND} "),
        "{:?}",
        r.outcome
    );
    assert_eq!(server::get().hits("/greedy"), before);
    let v = violations_of(&r.outcome, "capability");
    assert!(
        v.iter().all(|v| v.starts_with("in module greedy: ")),
        "{v:?}"
    );
    assert_eq!(v.len(), 3, "{v:?}");
}

#[test]
fn redaction_holds_end_to_end_for_a_hostile_logger() {
    // Two long secrets shrink the text; a third copy straddles the end of
    // what the host reads (4 KiB + the longest secret).
    let secret = format!("sk_live_{}", "0123456789".repeat(5) + "012345");
    let mut msg = secret.repeat(2).into_bytes();
    msg.resize(4096 + 64 - 10, b'x');
    msg.extend_from_slice(secret.as_bytes());
    msg.extend_from_slice(&[b'y'; 100]);
    let g = Guest::new(&["log"], &rec("log", &[2, 8192, msg.len() as i64])).data(8192, &msg);
    let mut i = inv(&g.file(), &[]);
    i.capabilities = caps(&["log:write"]);
    i.redact = vec![secret.clone()];
    let got = run_on(&kv_backend().0, &i);
    assert_eq!(got.codes, [OK]);
    let logged = &got.outcome.logs[0].message;
    assert!(
        !logged.contains("sk_live"),
        "{}",
        &logged[logged.len() - 80..]
    );
    // Adjacent secrets become one mark.
    assert!(logged.starts_with("[REDACTED]xxx"), "{}", &logged[..40]);
}

#[test]
fn a_granted_name_reaches_only_the_addresses_egress_allows() {
    // `net:http:NAME` reaches what the name resolves to (once per run)
    // only where its class allows: a public address, never the metadata
    // service, loopback or a private address (a private one needs a grant
    // naming the address). `localhost` is covered in
    // loopback_is_never_reached_even_when_granted.
    in_net(|| {
        let port = server::get().port;
        let backend = http_backend(2000);
        let got = http_attack(
            &backend,
            &[
                "net:http:api.test",
                "net:http:meta.test",
                "net:http:intranet.test",
                "net:http:loop.test",
            ],
            &[
                req("GET", format!("http://api.test:{port}/hello")),
                req("GET", format!("http://meta.test:{port}/hello")),
                req("GET", format!("http://intranet.test:{port}/hello")),
                req("GET", format!("http://loop.test:{port}/hello")),
            ],
        );
        assert_eq!(rcs(&got), [OK, DENIED, DENIED, DENIED], "{:?}", got.outcome);
        let allowed: Vec<bool> = got.outcome.connections.iter().map(|c| c.allowed).collect();
        assert_eq!(allowed, [true, false, false, false]);
        assert_eq!(violations_of(&got.outcome, "net").len(), 3);
        assert_eq!(got.outcome.status, Status::Violation);
    })
}

#[test]
fn preview_0_and_misnamed_clock_imports_are_not_linked() {
    let tmp = TempDir::new("redteam-p0");
    for (name, text) in [
        (
            "p0.wat",
            r#"(module
  (import "wasi_unstable" "clock_time_get" (func (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#,
        ),
        (
            "sig.wat",
            r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#,
        ),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let r = run(&inv(&path, &[]));
        assert_eq!(r.outcome.status, Status::Error, "{name}: {:?}", r.outcome);
        assert_eq!(r.outcome.exit_code, Some(126), "{name}: {:?}", r.outcome);
    }
}

// ---------------------------------------------------------------------
// The WIT interfaces (components): the same checks behind other types.

#[test]
fn component_guests_meet_the_same_checks() {
    in_net(component_guests_meet_the_same_checks_in_net)
}

fn component_guests_meet_the_same_checks_in_net() {
    let port = server::get().port;
    let url = format!("http://{PUBLIC}:{port}/echo");
    let before = server::get().hits("/echo");
    let mut commands: Vec<String> = [
        "Host|evil.test",
        "host|evil.test",
        " Host|evil.test",
        "Host |evil.test",
        "X-A|b%rInjected: yes",
        "X-A%rInjected|yes",
        "Content-Length|0",
        "Transfer-Encoding|chunked",
        "|empty name",
        "X:Y|z",
    ]
    .iter()
    .map(|h| format!("header {h}|{url}"))
    .collect();
    commands.push(format!("headers 65 {url}"));
    commands.push(format!("headers 100000 {url}"));
    commands.push(format!("body {} {url}", (1 << 20) + 1));
    commands.push(format!("log {}", 8 << 20));
    for ns in ["a/b", "a%0b", "*", "", "..", "\u{e9}"] {
        commands.push(format!("kvns {ns}"));
    }
    let mut i = inv(&component("redteam_wit"), &[]);
    i.argv.extend(commands.iter().cloned());
    i.capabilities = caps(&[
        &public_grant(),
        "log:write",
        "kv:write:*",
        "module:call:none",
    ]);
    let got = run_on(&kv_backend().0, &i);
    let lines: Vec<&str> = got.stdout.lines().collect();
    let expected = [
        vec!["Err(invalid)"; 10],
        vec!["Err(too-large)"; 3],
        vec!["Ok"],
        vec!["Err(invalid)"; 6],
    ]
    .concat();
    assert_eq!(lines, expected, "{:?} {}", got.outcome, got.stderr);
    assert_eq!(server::get().hits("/echo"), before, "a request went out");
    // The 8 MiB message was cut to 4 KiB.
    let logged = &got.outcome.logs[0].message;
    assert!(logged.len() <= 4096 + 3, "{}", logged.len());
    assert!(got.outcome.logs_truncated);
}

#[test]
fn calls_share_their_callers_kv_quota() {
    // The callee: 4,000 kv_get calls, then prints how many were answered
    // (NOT_FOUND) and how many hit the quota (LIMIT).
    let user = kv_get_loop(4000);
    let user = callee("kvuser", &user.file(), None);
    // The caller: calls kvuser three times and prints the replies.
    let mut body = String::new();
    for n in 0..3 {
        let buf = 8192 + n * 256;
        body += &format!(
            "(drop (call $call (i32.const 1024) (i32.const 6) (i32.const 0) (i32.const 0)
                              (i32.const {buf}) (i32.const 256) (i32.const {len}) (i32.const 2004)))
             (i32.store (i32.const {iov}) (i32.const {buf}))
             (i32.store (i32.const {iovlen}) (i32.load (i32.const {len})))
             (drop (call $fd_write (i32.const 1) (i32.const {iov}) (i32.const 1) (i32.const 8)))\n",
            len = 2100 + n * 4,
            iov = 3000 + n * 8,
            iovlen = 3004 + n * 8,
        );
    }
    let caller = Guest::new(&["call", "kv_get"], &body).data(1024, "kvuser");
    let mut i = inv(&caller.file(), &[]);
    i.capabilities = caps(&["module:call:kvuser", "kv:read:ns"]);
    i.modules = vec![user];
    i.tenant = "quota-calls".into();
    let got = run_on(&kv_backend().0, &i);
    // 10,000 operations per run, callees included.
    assert_eq!(
        got.codes,
        [4000, 0, 4000, 0, 2000, 2000],
        "{:?} {}",
        got.outcome,
        got.stdout
    );
}

/// A guest that calls `kv_get(ns, k)` `n` times and reports how many calls
/// were answered (NOT_FOUND) and how many hit the quota (LIMIT).
fn kv_get_loop(n: u32) -> Guest {
    let body = format!(
        r#"
    (local $i i32) (local $ok i32) (local $limit i32) (local $rc i32)
    (loop $l
      (local.set $rc (call $kv_get (i32.const 1024) (i32.const 2) (i32.const 1040) (i32.const 1)
                                   (i32.const 2000) (i32.const 10) (i32.const 2020)))
      (if (i32.eq (local.get $rc) (i32.const 2)) (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
      (if (i32.eq (local.get $rc) (i32.const 5)) (then (local.set $limit (i32.add (local.get $limit) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
    (call $r (local.get $ok))
    (call $r (local.get $limit))
    "#
    );
    Guest::new(&["kv_get"], "(call $ops)")
        .func(&format!("(func $ops {body})"))
        .data(1024, "ns")
        .data(1040, "k")
}
