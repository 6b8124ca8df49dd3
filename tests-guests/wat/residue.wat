;; Checks that linear memory starts clean: exits 1 if any of its probe
;; addresses (low memory, near 1 MiB, and in pages it grows) holds a
;; non-zero byte, else writes a marker at each and exits 0. Run twice in
;; the same process, the second run must still see zeros: nothing of a
;; previous run survives in a reused pool slot.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 17)
  (func $probe (param $addr i32)
    (if (i64.ne (i64.load (local.get $addr)) (i64.const 0))
      (then (call $proc_exit (i32.const 1))))
    (i64.store (local.get $addr) (i64.const 0x5345435245542121)))
  (func (export "_start")
    (call $probe (i32.const 1024))
    (call $probe (i32.const 1048000))
    (drop (memory.grow (i32.const 64)))
    (call $probe (i32.const 3145728))
    (call $probe (i32.const 5242000))
    (call $proc_exit (i32.const 0))))
