;; Calls warden.log with a message pointer past the end of its memory and
;; with a bad level, and exits with the sum of the two status codes
;; (INVALID + INVALID = 6): bad arguments are status codes, never traps.
(module
  (import "warden" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $proc_exit
      (i32.add
        (call $log (i32.const 2) (i32.const 65530) (i32.const 100))
        (call $log (i32.const 9) (i32.const 0) (i32.const 1))))))
