;; Hostile: grows a table by 1M elements at a time until refused, then traps.
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (loop $more
      (if (i32.eq (table.grow $t (ref.null func) (i32.const 1048576)) (i32.const -1))
        (then unreachable))
      (br $more))))
