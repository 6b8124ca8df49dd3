;; Malformed for a command: no `_start` export.
(module
  (memory (export "memory") 1)
  (func (export "main")))
