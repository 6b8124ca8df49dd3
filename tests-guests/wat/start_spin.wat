;; Hostile: an infinite loop in the module's start function, which runs
;; during instantiation, before any export is called.
(module
  (memory (export "memory") 1)
  (func $start (loop $forever (br $forever)))
  (start $start)
  (func (export "_start")))
