;; Counts down from 1e9 in a tight loop (CPU-bound, for fuel and cpu-time tests).
(module
  (memory (export "memory") 1)
  (global $n (mut i64) (i64.const 1000000000))
  (func (export "_start")
    (loop $more
      (global.set $n (i64.sub (global.get $n) (i64.const 1)))
      (br_if $more (i64.ne (global.get $n) (i64.const 0))))))
